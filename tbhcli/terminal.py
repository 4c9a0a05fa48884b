"""How text that users control (file names, paths, labels, run names, messages) reaches a terminal.

Every printer in tbh formats with rich markup, so a file named `e[/oops].jpg` would be parsed as a
closing tag (MarkupError), `[bold red]EVIL.png` would lose its brackets, `:smile:` would become an
emoji, and a name holding `\\x1b[31m` or a newline would drive the terminal or fake extra lines.
This module is the one place that makes such text inert: printers build their lines with
`shown(value)` for every interpolated value and print through a `make_console()`.
"""

import logging
import time
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

_SURROGATES = range(0xDC80, 0xDD00)  # undecodable bytes 0x80-0xFF kept by surrogateescape


def _escape_char(char: str) -> str:
    code = ord(char)
    if code in _SURROGATES:
        return f"\\x{code - 0xDC00:02x}"  # the original byte of a non-UTF-8 file name
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """`str(value)` with every non-printable character written as a Python-style escape.

    Control characters (C0, DEL, C1: ESC, newline, tab, ...), other invisible format characters
    (bidi overrides, line separators) and lone surrogates become `\\x1b`, `\\u202e`, ...; so
    one name is one visible line, and nothing can reach the terminal as a control sequence.
    A trailing backslash becomes `\\x5c`: in markup it would escape whatever follows.
    """
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape_char(c) for c in text)
    return text[:-1] + "\\x5c" if text.endswith("\\") else text


def shown(value: object) -> str:
    """`value` as a literal inside a rich markup string: `printable`, then markup-escaped."""
    return escape(printable(value))


def make_console(stderr: bool = False) -> Console:
    """A rich console for tbh's output: no emoji codes (`:smile:` in a name stays text), no
    automatic highlighting (paths are not numbers and URLs)."""
    return Console(stderr=stderr, emoji=False, highlight=False)


class ConsoleHandler(logging.Handler):
    """Prints tbh's log records on stderr as the lines they are (rich markup, names `shown`).

    The library logs through `logging` (logger "tbhcli.<module>") and never owns a terminal;
    the `tbh` command installs this handler (`log_to_stderr`), a notebook may too.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.console = make_console(stderr=True)

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "[yellow]warning:[/] " if record.levelno >= logging.WARNING else ""
        self.console.print(prefix + record.getMessage(), soft_wrap=True)


def log_to_stderr() -> None:
    """Show tbh's INFO messages (the model in use, what was written) and its warnings (files
    left out, a search that falls back to the scan) on stderr, once."""
    logger = logging.getLogger("tbhcli")
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(logging.INFO)


ProgressCallback = Callable[[str, int, int], None]
"""`progress(label, done, total)`: `done` of the `total` items of the job `label` are finished.

Library verbs that work through many images (`features`, `index`) take one as `progress=` and
call it as batches finish; they never draw anything themselves. `tbh` passes `ProgressBars`; a
notebook may pass `ProgressBars()` too, or its own function (a tqdm bar, a log line)."""


class ProgressBars:
    """A `ProgressCallback` drawing one rich bar per label: done / total, items/s, time left.

    Use it as a context manager (the bars stop at its end). Labels are shown literally: they
    hold folder names (no markup, no format fields, no control characters).
    """

    def __init__(self, console: Console | None = None, unit: str = "images"):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bars = Progress(
            TextColumn("{task.fields[label]}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f} " + unit + "/s"),
            TimeRemainingColumn(),
            console=console or make_console(stderr=True),
        )
        self._tasks: dict[str, tuple[object, float]] = {}  # label -> (task id, start time)

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self._tasks:
            if not self._tasks:
                self._bars.start()
            task = self._bars.add_task("", total=total, label=printable(label), rate=0.0)
            self._tasks[label] = (task, time.perf_counter())
        task, began = self._tasks[label]
        rate = done / max(time.perf_counter() - began, 1e-9)
        self._bars.update(task, completed=done, total=total, rate=rate)

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()


def no_progress(label: str, done: int, total: int) -> None:
    """The `ProgressCallback` of a verb called without one: nothing is shown."""
