"""The Typer layer: names, help texts, version, completion and the renamed options' old names."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tbhcli
from tbhcli.cli import COMMAND_ORDER, app
from tbhcli.cli_options import (
    BACKBONES,
    RENAMED,
    TEST_BACKBONES,
    DecoderOutput,
    Preset,
    TrainMethod,
    Variant,
    _rename,
    complete_backbone,
)
from tbhcli.jsondoc import schema

runner = CliRunner()
COMMANDS = sorted(app.registered_commands, key=lambda c: c.callback.__name__)
NAMES = [c.name or c.callback.__name__ for c in COMMANDS]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"tbh {tbhcli.__version__}"


def test_shell_completion_is_offered():
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


@pytest.mark.parametrize("name", NAMES)
def test_help_has_examples_and_no_type_names(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    examples = text.split("Examples:")[1].strip().splitlines()
    assert 1 <= len(examples) <= 3 and all(line.strip().startswith("tbh ") for line in examples)
    # values are named (STORE, N), choices listed (<auto|cuda|cpu>); no Python type names
    assert not re.search(r"<(int|str|float|bool|path|Path|text)>|list\[", text), text


def test_choices_are_shown_as_choices():
    assert "<auto|cuda|cpu>" in runner.invoke(app, ["index", "--help"]).stdout
    assert "<images|features>" in runner.invoke(app, ["export", "--help"]).stdout
    bad = runner.invoke(app, ["query", "x.png", "--device", "gpu"])
    assert bad.exit_code == 2 and "gpu" in bad.output


def test_backbone_choices_are_the_registry():
    from tbhcli.imaging.backbones import list_backbones

    assert list(BACKBONES + TEST_BACKBONES) == list_backbones()
    assert complete_backbone("t") == ["timm:"]  # the test-only `tiny` is never offered
    assert "tiny" not in runner.invoke(app, ["features", "--help"]).stdout


def test_help_lists_commands_in_the_order_of_the_data_path():
    text = runner.invoke(app, ["--help"]).stdout
    listed = re.findall(r"^  ([a-z]+) ", text.split("Commands:")[1], flags=re.MULTILINE)
    assert listed == list(COMMAND_ORDER) and sorted(listed) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_values_are_named_in_one_style(name):
    """Counts are N, other numbers X, paths PATH unless named; the usage line has no {} or [[]]."""
    text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).stdout
    usage = text.splitlines()[0]
    assert "{" not in usage and "[[" not in usage, usage
    for option in ("STEPS", "BATCH_SIZE", "SEED", "VAL_EVERY", "PATIENCE", "EVAL_QUERIES", "OUT"):
        assert not re.search(rf"--[a-z-]+ {option}\b", text), (option, text)


def test_train_choices_are_the_library_s():
    from tbhcli.hashing.tbh import VARIANTS
    from tbhcli.training.config import DECODER_OUTPUTS, METHODS, PRESETS

    for choices, library in [
        (TrainMethod, METHODS),
        (Variant, VARIANTS),
        (Preset, PRESETS),
        (DecoderOutput, DECODER_OUTPUTS),
    ]:
        assert sorted(c.value for c in choices) == sorted(library)
    help_text = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    assert "<tbh|itq|pcah|lsh|auto>" in help_text and "<fast|faithful>" in help_text


@pytest.mark.parametrize(
    "command, old, new",
    [
        ("evaluate", ["--model", "runs/a"], ["--run", "runs/a"]),
        ("evaluate", ["--model=runs/a"], ["--run=runs/a"]),
        ("evaluate", ["--queries", "q.npy"], ["--query-features", "q.npy"]),
        ("evaluate", ["--queries", "q.zarr"], ["--query-store", "q.zarr"]),
        ("index", ["dir", "--queries", "qdir"], ["dir", "--query-images", "qdir"]),
        ("features", ["--weights", "w.pt"], ["--backbone-weights", "w.pt"]),
        ("query", ["--model", "m.onnx"], ["--model", "m.onnx"]),  # --model is the ONNX file here
        ("index", ["--", "--queries"], ["--", "--queries"]),  # after "--", values stay as typed
    ],
)
def test_old_option_names_map_to_the_new(command, old, new, capsys):
    assert _rename(command, old) == new
    warned = capsys.readouterr().err
    assert (old != new) == ("deprecated" in warned)
    assert len(warned.splitlines()) == (old != new)


def test_old_name_works_end_to_end_with_one_warning_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["evaluate", "--model", "runs/none", "--database", "db.npy"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert "`tbh evaluate --model` is deprecated" in lines[0] and "--run" in lines[0]
    assert "--query-features" in lines[1] and len(lines) == 2


def test_every_renamed_command_exists_and_the_new_names_are_its_options():
    for command, renames in RENAMED.items():
        help_text = runner.invoke(app, [command, "--help"]).stdout
        for old, new in renames.items():
            targets = [new] if isinstance(new, str) else [new("x.npy"), new("x.zarr")]
            assert all(t in help_text for t in targets)
            assert f"{old} " not in help_text  # hidden


def _json(args: list[str]) -> tuple[dict, str]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_every_json_document_has_its_schema_and_names_the_defaults(in_tmp):
    from tests.tiny_workspace import make_images

    tmp_path = in_tmp
    make_images(tmp_path / "images", {"a": 6, "b": 6})
    make_images(tmp_path / "queries", {"a": 2, "b": 2}, seed=5)
    tiny = ["--backbone", "tiny", "--workers", "0", "--json"]
    feats, _ = _json(["features", "images", "-o", "images.npy", *tiny])
    assert (feats["n"], feats["dim"], feats["classes"]) == (12, 32, ["a", "b"])
    assert feats["features"] == "images.npy" and feats["labels"] == "images.labels.npy"
    assert (
        runner.invoke(app, ["train", "images.npy", "--method", "lsh", "--bits", "16"]).exit_code
        == 0
    )

    exported, err = _json(["export", "--json"])
    assert exported["run"] == "runs/images-lsh-16" and exported["bits"] == 16
    assert "using run runs/images-lsh-16 (newest)" in err
    model = exported["model"]
    indexed, err = _json(["index", "images", "--query-images", "queries", "--workers", "0",
                          "--device", "cpu", "--json"])  # fmt: skip
    assert f"using model {model} (newest)" in err and "using store codes.zarr (default)" in err
    assert (indexed["model"], indexed["store"], indexed["rows"]) == (model, "codes.zarr", 12)
    assert indexed["images"]["added"] == 12 and indexed["query_images"]["added"] == 4

    found, _ = _json(["query", "queries/a/img000.png", "--top", "3", "--device", "cpu", "--json"])
    assert (found["model"], found["store"]) == (model, "codes.zarr")
    scores, _ = _json(["evaluate", "--metric", "p@r2", "--json"])
    (scored,) = scores["results"]
    assert scored["store"] == "codes.zarr" and 0 <= scored["scores"]["p@r2"] <= 1
    groups, _ = _json(["duplicates", "--json"])
    workspace, _ = _json(["info", "--json"])
    assert workspace["stores"][0]["rows"] == 12
    documents = {"features": feats, "export": exported, "index": indexed, "query": found,
                 "evaluate": scores, "duplicates": groups, "info": workspace}  # fmt: skip
    usage = (Path(__file__).parents[1] / "docs" / "usage.md").read_text()
    for command, doc in documents.items():
        assert list(doc)[0] == "schema" and doc["schema"] == schema(command)
        assert f'"schema": "{schema(command)}"' in usage  # documented
