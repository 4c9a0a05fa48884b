"""`import tbhcli` and `tbh --help` stay cheap: the heavy libraries load only when a verb runs."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "onnxruntime", "onnx", "zarr", "numba", "dask", "distributed",
         "matplotlib", "numpy", "PIL")  # fmt: skip


def _imported(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import tbhcli",
        "import tbhcli; tbhcli.__version__",
        "from tbhcli.cli import app",  # what `tbh --help` and shell completion load
    ],
)
def test_nothing_heavy_is_imported(code):
    loaded = _imported(code)
    assert [m for m in HEAVY if m in loaded] == []


def test_a_verb_imports_its_stage_on_first_use():
    loaded = _imported("import tbhcli; tbhcli.evaluate")
    assert "tbhcli.evaluation.evaluate" in loaded
