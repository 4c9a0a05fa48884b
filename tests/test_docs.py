"""Every code block of README.md and docs/usage.md is either run here or marked as not runnable.

A block is preceded by `<!-- test: run -->` (executed: bash lines through the `tbh` CLI,
python with exec) or `<!-- test: skip REASON -->`. The blocks run in a tiny workspace of class
folders; the one concession to speed is that `tbh train` / `tbhcli.train` train for
`TRAIN_STEPS` steps on small batches instead of to their plateau.
"""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbhcli.cli import app
from tests.tiny_workspace import make_images

ROOT = Path(__file__).parents[1]
DOCS = ["README.md", "docs/usage.md"]
BLOCK = re.compile(r"(?:<!-- test: (run|skip[^>]*) -->\n)?```(\w*)\n(.*?)```", re.S)
TRAIN_STEPS = 5
# Commands that run until stopped: only their options are checked here (`--help` after them
# parses the line); tests/test_serve.py starts a real server.
LONG_RUNNING = {"serve"}


def blocks(doc: str) -> list[tuple[str | None, str, str]]:
    """(marker, language, code) of each fenced block of `doc`."""
    return [m.groups() for m in BLOCK.finditer((ROOT / doc).read_text())]


def runnable(doc: str) -> list[tuple[str, str]]:
    return [(lang, code) for mark, lang, code in blocks(doc) if mark == "run"]


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_is_run_or_says_why_not(doc):
    unmarked = [code.splitlines()[0] for mark, _, code in blocks(doc) if mark is None]
    assert unmarked == [], f"{doc}: mark these blocks <!-- test: run --> or skip: {unmarked}"


def commands(code: str) -> list[list[str]]:
    """The `tbh` command lines of a shell block (comments dropped, continuations joined)."""
    lines = re.sub(r"\\\n\s*", " ", code).splitlines()
    argvs = [shlex.split(line, comments=True) for line in lines]
    argvs = [argv for argv in argvs if argv]
    assert all(argv[0] == "tbh" for argv in argvs), argvs
    return [argv[1:] for argv in argvs]


@pytest.fixture
def docs_workspace(tmp_path, monkeypatch):
    """Class folders of images and queries, a query image img.jpg; short training."""
    import tbhcli.training.fit as fit

    make_images(tmp_path / "images", {"cat": 24, "dog": 24})
    make_images(tmp_path / "queries", {"cat": 4, "dog": 4}, seed=3)
    (tmp_path / "queries" / "cat" / "img000.png").rename(tmp_path / "img.jpg")
    original = fit.train

    def short_train(*args, **kwargs):
        return original(*args, **(kwargs | {"steps": TRAIN_STEPS, "batch_size": 16}))

    monkeypatch.setattr(fit, "train", short_train)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_block(lang: str, code: str) -> None:
    if lang == "python":
        exec(compile(code, "<doc block>", "exec"), {})
        return
    runner = CliRunner()
    for argv in commands(code):
        if argv[0] in LONG_RUNNING:
            argv = [*argv, "--help"]
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, f"tbh {shlex.join(argv)}:\n{result.output}"


@pytest.mark.parametrize(
    "lang, code",
    [
        # a shell example is the whole path with EfficientNet-Lite0 at 224 px, exported to ONNX
        pytest.param(lang, code, marks=[pytest.mark.slow] if lang == "bash" else [])
        for doc in DOCS
        for lang, code in runnable(doc)
    ],
    ids=lambda v: v[:30],
)
def test_runnable_block_runs(lang, code, docs_workspace):
    """Each block in a fresh workspace; a Python block starts from the features it names."""
    if lang == "python":
        run_block("bash", "tbh features ./images -o features.npy --backbone tiny\n"
                  "tbh features ./queries -o queries.npy --backbone tiny")  # fmt: skip
    run_block(lang, code)


def test_readme_runs_the_whole_path():
    """The README's shell example is the whole path: each stage is a runnable line."""
    (lang, code), *_ = runnable("README.md")
    names = [argv[0] for argv in commands(code)]
    assert names[:8] == ["features", "train", "export", "index", "query", "evaluate",
                         "duplicates", "info"]  # fmt: skip
