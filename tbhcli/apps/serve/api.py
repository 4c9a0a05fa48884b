"""The HTTP face of `SearchService`: FastAPI routes, the bearer token, the body limit, JSON errors.

Every error a client can cause is a 4xx with a JSON body `{"error": "one sentence"}`: bad input
400/422, no or wrong token 401, unknown item 404, too large 413, wrong content type 415. The page
(`static/`) and the OpenAPI docs (`/docs`) need no token; they hold no data.
"""

import secrets
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, model_validator
from starlette.exceptions import HTTPException

import tbhcli
from tbhcli.apps.query import results_payload
from tbhcli.apps.serve.service import (
    MAX_BATCH,
    MAX_PAGE,
    MAX_TOP,
    ORDERS,
    VIEW_SIDE,
    NotFound,
    SearchService,
    StoreUnavailable,
    Upload,
)
from tbhcli.errors import TbhError
from tbhcli.imaging.images import ImageDecodeError
from tbhcli.storage.store import StoreDamaged

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 10 << 20
IMAGE_FIELD = "image"  # the multipart field of uploaded images (repeatable)

Top = Annotated[int, Query(ge=1, le=MAX_TOP, description="Neighbours per query.")]
Radius = Annotated[
    int | None, Query(ge=0, description="Only neighbours within this Hamming distance.")
]


# ---- answers (the OpenAPI schemas of the responses; tests validate real answers against them) --


class Health(BaseModel):
    status: Literal["ok"]


class Stats(BaseModel):
    """What `/stats` says about the store and the model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    rows: int
    bits: int
    classes: list[str]
    model: str
    model_sha256: str | None
    image_size: int | None
    store: str
    store_updated: str | None
    provider: str
    text_queries: bool  # whether POST /query takes {"text": ...} (a clip:NAME run's text model)


class Item(BaseModel):
    """A store row; `code` is hex (as `POST /query` takes it); file size and pixels are null when
    the file cannot be read."""

    model_config = ConfigDict(extra="forbid")
    row: int
    path: str
    label: str | None
    code: str
    file_bytes: int | None
    width: int | None
    height: int | None


class Listed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    row: int
    path: str
    label: str | None


class ItemsPage(BaseModel):
    """One page of the collection, in the order asked for."""

    model_config = ConfigDict(extra="forbid")
    total: int
    offset: int
    order: Literal[ORDERS]
    items: list[Listed]


class Neighbour(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rank: int
    distance: int
    row: int
    path: str
    label: str | None


class QueryAnswer(BaseModel):
    """The neighbours of one query, nearest first (distance, then row)."""

    model_config = ConfigDict(extra="forbid")
    query: str
    neighbours: list[Neighbour]


class ErrorAnswer(BaseModel):
    error: str


Answers = list[QueryAnswer]
_ERRORS = {code: {"model": ErrorAnswer} for code in (400, 401, 404, 413, 415, 422, 503)}


# ---- queries -----------------------------------------------------------------------------------


class OneQuery(BaseModel):
    """A JSON query: exactly one of a hex code, a store row or a text (a description)."""

    model_config = ConfigDict(extra="forbid")
    codes: str | None = None
    row: StrictInt | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "OneQuery":
        if sum(v is not None for v in (self.codes, self.row, self.text)) != 1:
            raise ValueError(
                'send exactly one of "codes" (hex), "row" (a store row) and "text" (a description)'
            )
        return self


class BatchQuery(BaseModel):
    """Many queries at once: a list of hex codes or a list of store rows."""

    model_config = ConfigDict(extra="forbid")
    codes: list[str] | None = None
    rows: list[StrictInt] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "BatchQuery":
        if (self.codes is None) == (self.rows is None):
            raise ValueError('send exactly one of "codes" (hex strings) and "rows" (store rows)')
        return self


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(errors: list[dict]) -> str:
    """The first pydantic error as one line: `query.top: Input should be ...`."""
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = first.get("msg", "invalid input").removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` (413), by their header or as they stream."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = f"the request body is larger than {self.max_bytes:,} bytes (--max-upload-mb)."
        if declared is not None:
            if not declared.isdigit():
                return await _error(400, "bad Content-Length header.")(scope, receive, send)
            if int(declared) > self.max_bytes:
                return await _error(413, too_large)(scope, receive, send)
        seen = 0

        async def limited_receive():  # a body sent without (or beyond) its declared length
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited_receive, send)


class HostCheck:
    """ASGI middleware: answer only requests whose Host header names one of `hosts` (400 else).

    A server on loopback without a token is safe only from other machines: a web page could
    point its own domain at 127.0.0.1 (DNS rebinding) and read the answers. Its requests carry
    that domain as Host, so they are refused.
    """

    def __init__(self, app, hosts: set[str]):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            try:
                name = urlsplit(f"//{host}").hostname  # no port, no [] around IPv6, lower case
            except ValueError:
                name = None
            if name not in self.hosts:
                message = f"this server answers only requests to {', '.join(sorted(self.hosts))}."
                return await _error(400, message)(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(
    service: SearchService,
    token: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    hosts: set[str] | None = None,
) -> FastAPI:
    """The ASGI app over `service`; with `token`, the API wants `Authorization: Bearer <token>`;
    with `hosts`, only requests whose Host header names one of them are answered."""
    app = FastAPIOffline(  # FastAPI whose /docs and /redoc load no CDN asset
        title="tbh serve",
        version=tbhcli.__version__,
        description='Exact Hamming search over a tbh code store. Errors: `{"error": ...}`.',
        redoc_url=None,  # ReDoc's bundle loads its logo from a CDN: /docs (Swagger UI) only
        responses=_ERRORS,
    )
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    if hosts is not None:
        app.add_middleware(HostCheck, hosts={h.lower() for h in hosts})
    _add_error_handlers(app)
    bearer = HTTPBearer(auto_error=False)

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), token.encode()
        ):
            raise HTTPException(
                401,
                "this server wants a token: send `Authorization: Bearer <token>`.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    api = [Depends(authorized)]

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    def health() -> Health:
        """Liveness: {"status": "ok"} (no token needed)."""
        return Health(status="ok")

    @app.get("/stats", dependencies=api)
    def stats() -> Stats:
        """Rows, bits, classes, model file and sha256, when the store was last updated."""
        return Stats(**service.stats())

    @app.get("/items", dependencies=api)
    def items(
        offset: Annotated[int, Query(ge=0, description="Items to skip.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page.")] = 60,
        order: Annotated[
            Literal[ORDERS],
            Query(description="newest file first, by folder (path), or as indexed (row)."),
        ] = "newest",
    ) -> ItemsPage:
        """The collection, a page at a time: browse it before (or without) any query."""
        return ItemsPage(**service.browse(offset, limit, order))

    @app.get("/items/{row}", dependencies=api)
    def item(row: int) -> Item:
        """A store row: {row, path, label, code (hex), file_bytes, width, height}."""
        return Item(**service.item(row))

    pictures = {200: {"content": {"image/jpeg": {}, "image/png": {}}}}

    @app.get(
        "/items/{row}/thumbnail", dependencies=api, response_class=Response, responses=pictures
    )
    def thumbnail(row: int) -> Response:
        """A row's image, at most 256 px (PNG if that small already, else JPEG); read only from
        inside the indexed folder."""
        return _picture(*service.thumbnail(row))

    @app.get("/items/{row}/image", dependencies=api, response_class=Response, responses=pictures)
    def image(row: int) -> Response:
        """A row's image for the full-size view, at most 2048 px (re-encoded: the file itself is
        never sent); read only from inside the indexed folder."""
        return _picture(*service.thumbnail(row, VIEW_SIDE))

    @app.post(
        "/query",
        dependencies=api,
        openapi_extra=_QUERY_BODY,
        response_class=JSONResponse,
        responses={200: {"model": Answers}},
    )
    async def query(request: Request, top: Top = 10, radius: Radius = None) -> JSONResponse:
        """Neighbours of uploaded images (multipart field `image`, repeatable), of one hex code
        (`{"codes": "..."}`), of one store row (`{"row": 123}`) or of a description
        (`{"text": "a red bicycle"}`, when `/stats` says `text_queries`): the JSON of
        `tbh query --json`."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            uploads = await _uploads(request)
            results = await run_in_threadpool(service.by_images, uploads, top, radius)
        elif kind == "application/json":
            body = _parse(OneQuery, await request.body())
            if body.codes is not None:
                results = await run_in_threadpool(service.by_codes, [body.codes], top, radius)
            elif body.text is not None:
                results = await run_in_threadpool(service.by_texts, [body.text], top, radius)
            else:
                results = await run_in_threadpool(service.by_rows, [body.row], top, radius)
        else:
            raise HTTPException(
                415, "send images as multipart/form-data, or a code or row as application/json."
            )
        return JSONResponse(results_payload(results))

    # Up to 1,000 x 1,000 neighbours: sent as they are (the schema is documented, not re-checked).
    @app.post(
        "/query/batch",
        dependencies=api,
        response_class=JSONResponse,
        responses={200: {"model": Answers}},
    )
    def query_batch(body: BatchQuery, top: Top = 10, radius: Radius = None) -> JSONResponse:
        """Neighbours of up to 1,000 hex codes (`{"codes": [...]}`) or store rows
        (`{"rows": [...]}`) at once, in the order given."""
        if body.codes is not None:
            return JSONResponse(results_payload(service.by_codes(body.codes, top, radius)))
        return JSONResponse(results_payload(service.by_rows(body.rows, top, radius)))

    return app


def _picture(data: bytes, kind: str) -> Response:
    return Response(
        data, media_type=f"image/{kind}", headers={"Cache-Control": "private, max-age=3600"}
    )


def _parse(model: type[BaseModel], body: bytes) -> BaseModel:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


async def _uploads(request: Request) -> list[Upload]:
    form = await request.form(max_files=MAX_BATCH, max_fields=10)
    files = [f for f in form.getlist(IMAGE_FIELD) if hasattr(f, "read")]
    if not files:
        raise HTTPException(400, f"send the image as a multipart file field named {IMAGE_FIELD!r}.")
    return [Upload(f.filename or "upload", await f.read()) for f in files]


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(list(exc.errors())))

    @app.exception_handler(TbhError)
    async def user_error(request: Request, exc: TbhError) -> JSONResponse:
        if isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, ImageDecodeError):
            status = 422
        elif isinstance(exc, StoreUnavailable):
            status = 503
        elif isinstance(exc, StoreDamaged):  # the server's data, not the request, is wrong
            status = 500
        else:
            status = 400
        return _error(status, str(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:  # logged by the server
        return _error(500, "internal error; the server's log has the details.")


_QUERY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        IMAGE_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                    "required": [IMAGE_FIELD],
                }
            },
            "application/json": {"schema": OneQuery.model_json_schema()},
        },
    }
}
