"""A real `tbh serve` process for the tests that need a socket (CLI, browser)."""

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def serve_command(*args: str) -> list[str]:
    """`tbh serve ARGS` as run by this interpreter (so the tree under test is imported)."""
    return [sys.executable, "-m", "tbhcli.cli", "serve", *args]


def serve_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def listening_url(server: subprocess.Popen) -> str:
    """The URL a starting `tbh serve` prints (lines before it, such as warnings, are skipped)."""
    seen = []
    for line in server.stderr:
        seen.append(line)
        if url := re.search(r"http://127\.0\.0\.1:\d+/", line):
            return url[0]
    raise AssertionError("tbh serve did not start:\n" + "".join(seen))


@contextmanager
def running_server(cwd: Path, *args: str) -> Iterator[tuple[str, list[str]]]:
    """Start `tbh serve --port 0 ARGS` in `cwd`; yield (its URL, stderr lines once it stopped).

    The lines list is filled after the server stops (Ctrl-C); it must exit 0.
    """
    server = subprocess.Popen(
        serve_command("--port", "0", *args),
        cwd=cwd,
        env=serve_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        yield listening_url(server), lines
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        finally:
            server.kill()
            lines += server.stderr.read().splitlines()
            server.stderr.close()
    assert server.returncode == 0, lines
