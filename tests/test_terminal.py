"""tbhcli.terminal: user-controlled names reach the terminal (and HTML) as literal, inert text."""

import io
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tbhcli.cli import app
from tbhcli.deploy.export import export
from tbhcli.indexing.index import index
from tbhcli.terminal import make_console, printable, shown
from tests.tiny_workspace import make_images, make_lsh_run

ESC = "\x1b[31m"
# Readable images with hostile names: markup tags, an emoji code, a terminal escape, HTML.
NOT_UTF8 = os.fsdecode(b"bad\xffbytes.png")  # a lone surrogate in Python, \xff on screen
HOSTILE = ["x[/b]y.png", "[bold red]EVIL.png", ":smile:.png", f"{ESC}red.png", "<i>x.png", NOT_UTF8]
UNREADABLE = ["e[/oops].jpg", f"{ESC}bad.jpg", "[bold red]BROKEN.jpg"]
WIDE = {"COLUMNS": "250"}  # tables never cut a name


def _render(markup: str) -> str:
    out = io.StringIO()
    console = make_console()
    console.file = out
    console.print(markup, soft_wrap=True)
    return out.getvalue().rstrip("\n")


def test_printable_writes_control_characters_as_escapes():
    assert printable("plain name.png") == "plain name.png"
    assert printable(f"{ESC}a\nb\tc\x7f\x9b.png") == "\\x1b[31ma\\x0ab\\x09c\\x7f\\x9b.png"
    assert printable("evil\u202egnp.exe") == "evil\\u202egnp.exe"  # a bidi override
    assert printable("bad\udcffbytes.png") == "bad\\xffbytes.png"  # surrogateescape'd byte 0xff
    assert printable("café 猫 😀.png") == "café 猫 😀.png"  # printable Unicode is kept
    assert printable("a\\b\\") == "a\\b\\x5c"  # a trailing backslash would escape markup


@pytest.mark.parametrize("name", [*HOSTILE, *UNREADABLE, "ends with a backslash\\", "\\[b]x"])
def test_shown_prints_the_name_literally(name):
    assert _render(f"[bold]file[/] {shown(name)} [yellow]done[/]") == f"file {printable(name)} done"


@pytest.fixture(scope="module")
def hostile_workspace(tmp_path_factory):
    """A store whose paths hold hostile names (two copies of each, so they are duplicates), and
    unreadable files with hostile names beside them."""
    ws = tmp_path_factory.mktemp("hostile")
    model = export(make_lsh_run(ws / "runs" / "lsh32"), out=ws / "onnx" / "lsh32.onnx")
    sources = make_images(ws / "src", {"": len(HOSTILE)})  # a different image per name
    folder = ws / "images" / "cat"
    folder.mkdir(parents=True)
    for source, name in zip(sources, HOSTILE, strict=True):
        for prefix in ("", "copy "):
            path = folder / f"{prefix}{name}"  # "x[/b]y.png" is a folder "x[" and a file "b]y.png"
            path.parent.mkdir(exist_ok=True)
            shutil.copy(source, path)
    make_images(ws / "images", {"dog": 3})
    for name in UNREADABLE:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"not an image")
    return ws, model


def _assert_literal(output: str, names: list[str]) -> None:
    assert ESC not in output and "\x1b" not in output
    for name in names:
        assert printable(name) in output, (name, output)


def test_index_prints_unreadable_hostile_names_literally(hostile_workspace, tmp_path):
    ws, model = hostile_workspace
    errors = tmp_path / "errors.tsv"
    args = ["index", str(ws / "images"), "--store", str(tmp_path / "c.zarr"), "--model"]
    result = CliRunner().invoke(
        app, [*args, str(model), "--workers", "0", "--device", "cpu", "--errors", str(errors)]
    )
    assert result.exit_code == 0, result.output
    assert f"{2 * len(HOSTILE) + 3} added, 0 already indexed, 3 skipped" in result.output
    _assert_literal(result.output, [f"cat/{n}" for n in UNREADABLE])
    assert "cannot decode image" not in result.output  # the reason alone follows the name
    lines = errors.read_text().splitlines()  # one line per file, even with a newline in a name
    assert len(lines) == 3 and all("\x1b" not in line for line in lines)


@pytest.fixture(scope="module")
def hostile_store(hostile_workspace):
    ws, model = hostile_workspace
    index(ws / "images", store=ws / "codes.zarr", model=model, workers=0, device="cpu")
    return ws


def test_query_table_prints_stored_hostile_paths_literally(hostile_store, monkeypatch):
    monkeypatch.chdir(hostile_store)
    query = Path("q[/i]") / f"{ESC}[bold]q.png"  # relative: the table title does not wrap
    query.parent.mkdir(parents=True)
    shutil.copy(hostile_store / "images" / "cat" / HOSTILE[0], query)
    result = CliRunner().invoke(app, ["query", str(query), "--top", "20"], env=WIDE)
    assert result.exit_code == 0, result.output
    _assert_literal(result.output, [str(query)] + [f"cat/{n}" for n in HOSTILE])
    assert "cat/copy x[/b]y.png" in result.output


def test_duplicates_table_prints_stored_hostile_paths_literally(hostile_store, monkeypatch):
    monkeypatch.chdir(hostile_store)
    result = CliRunner().invoke(app, ["duplicates", "--radius", "0"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert f"{len(HOSTILE)} groups" in result.output
    _assert_literal(result.output, [f"cat/{p}{n}" for n in HOSTILE for p in ("", "copy ")])


def test_html_gallery_escapes_hostile_paths(hostile_store, monkeypatch, tmp_path):
    monkeypatch.chdir(hostile_store)
    page = tmp_path / "g.html"
    queries = [str(hostile_store / "images" / "cat" / n) for n in ("<i>x.png", f"{ESC}red.png")]
    result = CliRunner().invoke(app, ["query", *queries, "--top", "3", "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "<i>x.png" not in text and "&lt;i&gt;x.png" in text
    assert "\x1b" not in text and "\\x1b[31mred.png" in text  # control characters escaped too


def test_errors_with_hostile_paths_are_one_literal_line(hostile_store, monkeypatch):
    monkeypatch.chdir(hostile_store)
    name = f"[bold red]nope{ESC}\n[/x]"
    for args, message in [
        (["query", f"{name}.png"], f"query image not found: {printable(name)}.png"),
        (["duplicates", "--store", f"{name}.zarr"], f"no code store at {printable(name)}.zarr;"),
    ]:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        assert "\x1b" not in result.output and "Traceback" not in result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"error: {message}"), line


def test_console_keeps_emoji_codes_as_text():
    out = io.StringIO()
    console = make_console()  # rich's default would turn :smile: into an emoji
    console.file = out
    console.print(shown(":smile:.png"))
    assert out.getvalue().strip() == ":smile:.png"


def test_every_console_comes_from_make_console():
    """A module with its own `Console(...)` would print `:smile:` names as emoji again."""
    package = Path(__file__).parents[1] / "tbhcli"
    own = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if path.name != "terminal.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "Console(" in line
    ]
    assert not own, own


def test_log_records_print_as_their_lines_once_the_handler_is_installed(capsys):
    import logging

    from tbhcli.terminal import ConsoleHandler, log_to_stderr

    logger = logging.getLogger("tbhcli")
    saved = logger.handlers[:], logger.level
    try:
        logger.handlers = [h for h in logger.handlers if not isinstance(h, ConsoleHandler)]
        log_to_stderr()
        log_to_stderr()  # a second `tbh` command in the same process adds no second handler
        assert sum(isinstance(h, ConsoleHandler) for h in logger.handlers) == 1
        logging.getLogger("tbhcli.deploy.export").info(f"exported {shown('[bold]x.onnx')}: 16 bits")
        assert capsys.readouterr().err == "exported [bold]x.onnx: 16 bits\n"
    finally:
        logger.handlers, logger.level = saved


def test_progress_bars_draw_one_bar_per_label():
    """`tbh`'s ProgressCallback: a bar per job, done / total and the label shown literally."""
    from io import StringIO

    from rich.console import Console

    from tbhcli.terminal import ProgressBars

    out = StringIO()
    with ProgressBars(Console(file=out, width=100, force_terminal=False)) as bars:
        for done in (0, 5, 10):
            bars("indexing a[b]", done, 10)
        bars("indexing queries", 3, 3)
    text = out.getvalue()
    assert "indexing a[b]" in text and "10/10" in text and "3/3" in text
