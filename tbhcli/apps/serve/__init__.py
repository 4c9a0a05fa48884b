"""`tbh serve`: a code store as an HTTP API and a search page, on uvicorn.

service.py answers queries (store + onnxruntime session, opened once), api.py maps them to HTTP
(FastAPI, OpenAPI docs at /docs), static/ is the page at `/`. Safe by default: loopback only; any
other host needs a bearer token (`token_file`) unless `insecure`; request bodies are capped.
"""

import contextlib
import ipaddress
import socket
from pathlib import Path

from tbhcli.errors import TbhError
from tbhcli.terminal import make_console, printable

LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}  # Host headers of a browser on this machine
MIN_TOKEN_CHARS = 16

console = make_console(stderr=True)


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def read_token(path: Path) -> str:
    """The bearer token in `path` (surrounding whitespace dropped), at least 16 characters."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TbhError(f"cannot read the token file {path}: {exc}.") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TbhError(
            f"the token in {path} must be one word of at least {MIN_TOKEN_CHARS} characters; make "
            "one with `python -c 'import secrets; print(secrets.token_urlsafe())' > FILE`."
        )
    return token


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless the user said --insecure."""
    if token is None and not insecure and not is_loopback(host):
        raise TbhError(
            f"--host {host} lets other machines connect: pass --token-file FILE (a bearer token), "
            "or --insecure to serve without one."
        )


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket on host:port (port 0: any free port), or one line on why not."""
    if not 0 <= port <= 65535:
        raise TbhError(f"--port must be 0 to 65535 (got {port}).")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise TbhError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    return sock


def serve(
    store: Path | None = None,
    model: Path | None = None,
    host: str = LOOPBACK,
    port: int = 8000,
    token_file: Path | None = None,
    insecure: bool = False,
    max_upload_mb: float = 10.0,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """Serve `store` (default codes.zarr) with its model until interrupted (Ctrl-C).

    Prints `tbh serve: http://HOST:PORT/` once it listens (with --port 0, the port it got).
    """
    token = read_token(token_file) if token_file is not None else None
    check_exposure(host, token, insecure)
    if not max_upload_mb > 0:
        raise TbhError(f"--max-upload-mb must be positive (got {max_upload_mb}).")
    sock = listen(host, port)  # a port in use is found before the slow imports and the model
    try:
        import uvicorn

        from tbhcli.apps.serve.api import create_app
        from tbhcli.apps.serve.service import SearchService
        from tbhcli.deploy.runtime import describe_provider

        service = SearchService(store, model, device, threads)
        # On loopback without a token, only this machine's names: no DNS-rebinding web page.
        hosts = LOOPBACK_NAMES | {host.lower()} if token is None and is_loopback(host) else None
        app = create_app(service, token, int(max_upload_mb * (1 << 20)), hosts)
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"tbh serve: http://{shown}:{sock.getsockname()[1]}/ (API docs at /docs) - store "
        f"{printable(service.db.path)} ({len(service.db)} rows, {service.db.bits} bits), model "
        f"{printable(service.info.path)} on {describe_provider(service.provider)}"
        + ("" if token is None else ", token required"),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    config = uvicorn.Config(app, log_level="warning", server_header=False, limit_concurrency=256)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after a clean stop
        uvicorn.Server(config).run(sockets=[sock])
    console.print("tbh serve: stopped", markup=False, highlight=False)
