"""The one exception type for mistakes a user can fix (bad paths, shapes, options), and how a
message names an option: as the user wrote it, a CLI flag or a Python argument."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ON_COMMAND_LINE = ContextVar("tbh_on_command_line", default=False)


class TbhError(Exception):
    """A user error: the CLI prints its message as one red line and exits with status 1.

    Write the message as one sentence that says what went wrong and what to do next.
    Programming errors must not use this type, so they keep their tracebacks.
    """


def option(name: str, flag: str | None = None, python: str | None = None) -> str:
    """An option as the user spelled it: `--batch-size` under `tbh`, `batch_size` from Python.

    `flag` is the command line's spelling where it is not derived from the name, `python` the
    Python one where the bare name would not do (`resume=True` for a switch).

    >>> option("batch_size")
    'batch_size'
    >>> with on_command_line():
    ...     option("batch_size")
    '--batch-size'
    """
    if _ON_COMMAND_LINE.get():
        return flag or "--" + name.replace("_", "-")
    return python or name


@contextmanager
def on_command_line() -> Iterator[None]:
    """Within this block, `option` spells options as flags (the `tbh` command enters it)."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)
