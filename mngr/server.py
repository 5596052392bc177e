"""`mngr serve`: the HTTP JSON API over this machine's providers that the `mngr` backend uses.

Needs the `server` extra (`pip install 'mngr[server]'`: FastAPI + uvicorn). Every route is
under `/v1`; the OpenAPI document is at `/v1/openapi.json`.

    GET    /v1/health                          no token needed
    GET    /v1/providers
    GET    /v1/hosts?provider=P...             {schema_version, hosts, errors} as `host list`
    POST   /v1/hosts                           {name, provider, image, tags, from_snapshot, options}
    DELETE /v1/hosts/{ref}?provider=P&force=&purge=
    POST   /v1/hosts/{ref}/stop                {snapshot}
    POST   /v1/hosts/{ref}/start               {snapshot} (optional: start from that snapshot)
    POST   /v1/hosts/{ref}/tags                {set, remove}
    POST   /v1/hosts/{ref}/snapshots           {name}
    WS     /v1/hosts/{ref}/exec?provider=P     exec, shell or a port of the host, streamed
    GET    /v1/snapshots?provider=P...&host=H
    DELETE /v1/snapshots/{ref}?provider=P

A host `ref` is `NAME`, `NAME.PROVIDER` or a `host-…` id, as on the command line.

Tokens: `--token-file` holds one token per line; blank lines and `#` comments are ignored. A
plain line (or one starting `rw:`) is a read-write token; a line starting `ro:` is a read-only
token, which may call every GET but gets 403 on anything that changes a host or snapshot, and
on the exec WebSocket (mngr/toolkit/wsexec.py says its protocol; mngr/relay.py runs it).
Every route but health, the OpenAPI document included, needs `Authorization: Bearer <token>`
(401 without a valid one), checked from the headers before any body is read. Tokens are
compared in constant time and never logged. A token file that others can write is refused;
one they can read is warned about.

Errors are `{"error": {"kind": ..., "message": ...}}` with the status mapped from mngr's error
kinds (see `STATUS_OF`); bad input is always a 4xx, never a 500.
"""

import hmac
import logging
import os
import resource
import socket
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Body, Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from mngr import __version__, resources
from mngr.api import (
    HOST_REF_PATTERN,
    NAME_PATTERN,
    PROVIDER_PATTERN,
    CreateHostBody,
    ErrorBody,
    ExecStart,
    Health,
    HostList,
    HostResult,
    ProviderInfo,
    ProviderList,
    SnapshotBody,
    SnapshotList,
    SnapshotResult,
    StartBody,
    StopBody,
    TagBody,
)
from mngr.config import Settings
from mngr.errors import (
    ConfigError,
    ConflictError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UnsupportedError,
    UsageError,
    VendorCommandError,
    VendorMissingError,
    VendorOutputError,
    VendorTimeoutError,
    validation_message,
)
from mngr.names import PROVIDER_NAME_RE
from mngr.records import Host, Snapshot
from mngr.runner import Command, Runner
from mngr.service import Batch, Service
from mngr.toolkit.http import is_loopback
from mngr.toolkit.wsexec import control

log = logging.getLogger("mngr.server")

READ_ONLY_PREFIX = "ro:"
READ_WRITE_PREFIX = "rw:"
MIN_TOKEN_LENGTH = 16
MAX_BODY_BYTES = 64 * 1024
READ_THREADS = 16
WRITE_THREADS = 16
REQUEST_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 1000
READ_TIMEOUT_S = 15.0  # for a request's headers, and again for its body
PUBLIC_PATHS = frozenset({"/v1/health"})
READ_METHODS = frozenset({"GET", "HEAD"})  # all a read-only token may call


# Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: list[tuple[type[MngrError], int]] = [
    (UnsupportedError, 422),
    (UsageError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    # The server's own vendor credentials were refused: not the caller's fault.
    (UnauthorisedError, 502),
    (VendorTimeoutError, 504),
    (UnreachableError, 502),
    (VendorOutputError, 502),
    (VendorCommandError, 502),
    (VendorMissingError, 503),
    (InterruptedByUser, 503),
]


# --- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    secret: bytes
    read_only: bool


def load_tokens(path: Path) -> list[Token]:
    """Read a token file. Errors name the file and line, never the token."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: token file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a token file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read token file (permission denied)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read token file ({exc})") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        read_only = line.startswith(READ_ONLY_PREFIX)
        secret = line.removeprefix(READ_ONLY_PREFIX if read_only else READ_WRITE_PREFIX)
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{path}:{number}: token is shorter than {MIN_TOKEN_LENGTH} characters"
            )
        if not all(33 <= ord(c) <= 126 for c in secret):
            raise ConfigError(f"{path}:{number}: token must be printable ASCII without spaces")
        tokens.append(Token(secret.encode("ascii"), read_only))
    if not tokens:
        raise ConfigError(
            f"{path}: no tokens (one per line; a line starting {READ_ONLY_PREFIX!r} is read-only)"
        )
    return tokens


def token_file_warning(path: Path) -> str | None:
    """Refuse a token file that others can write (they could add their own token); a warning
    for one they can read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # load_tokens says what is wrong with it
    for verb, everyone, group in (
        ("writable", stat.S_IWOTH, stat.S_IWGRP),
        ("readable", stat.S_IROTH, stat.S_IRGRP),
    ):
        if mode & (everyone | group):
            who = "others" if mode & everyone else "its group"
            text = f"token file {path} is {verb} by {who} (mode {mode:04o}); run chmod 600 {path}"
            if verb == "writable":
                raise ConfigError(text)
            return text
    return None


class ApiError(Exception):
    """An error raised by the API layer itself (auth, body size), with its HTTP status."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers


class Auth:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    def check(self, method: str, authorization: bytes | None) -> None:
        """Raise ApiError 401 without a valid token, 403 for a read-only one on a change."""
        scheme, _, given = (authorization or b"").decode("latin-1").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorised", "a bearer token is required", challenge)
        token = self.match(given.strip())
        if token is None:
            raise ApiError(401, "unauthorised", "the bearer token is not valid", challenge)
        if token.read_only and method not in READ_METHODS:
            raise ApiError(403, "unauthorised", "this token is read-only")

    def match(self, given: str) -> Token | None:
        """Compare against every token in constant time (no early exit on a match)."""
        candidate = given.encode("utf-8", "replace")
        found: Token | None = None
        for token in self.tokens:
            if hmac.compare_digest(candidate, token.secret) and (found is None or found.read_only):
                found = token
        return found


# --- the API's answers ----------------------------------------------------------------------


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Bad request (invalid name, tag, option...)"),
        (401, "Missing or wrong bearer token"),
        (403, "Read-only token on a call that changes something"),
        (404, "No such host, snapshot, provider or route"),
        (409, "Conflict (the host already exists)"),
        (413, "Request body too large"),
        (422, "Request does not match the schema, or the backend cannot do this"),
        (502, "The provider failed, refused the server's credentials, or was unreachable"),
        (503, "The server is busy (retry), or the provider's vendor CLI is missing on it"),
        (504, "The provider did not answer in time"),
    )
}


def status_of(error: MngrError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(error, cls):
            return status
    return 502  # any other MngrError is the provider's failure, not a bug of the server


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None):
    return JSONResponse(
        {"error": {"kind": kind, "message": message}}, status_code=status, headers=headers
    )


def _validation_message(errors: list[Any]) -> str:
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ())]
    where = ".".join(loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc) or "request"
    return validation_message(first, where) if first else "invalid request"


class _Authenticate:
    """Check the bearer token from the headers alone, before anything reads the body, on every
    path but the public ones (so a caller without a token learns nothing, not even a 422)."""

    def __init__(self, app: Any, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in PUBLIC_PATHS:
            # A WebSocket runs commands in a host: never with a read-only token.
            method = scope.get("method", "WEBSOCKET")
            try:
                self.auth.check(method, dict(scope["headers"]).get(b"authorization"))
            except ApiError as exc:
                answer = _error(exc.status, exc.kind, exc.message, exc.headers)
                if scope["type"] == "http":
                    await answer(scope, receive, send)
                elif "websocket.http.response" in scope.get("extensions", {}):
                    await receive()  # websocket.connect
                    await answer(scope, receive, send)  # the upgrade answered with the status
                else:
                    await send({"type": "websocket.close", "code": 1008})  # a bare 403
                return
        await self.app(scope, receive, send)


class _BodyLimit:
    """Refuse request bodies over MAX_BODY_BYTES: by their Content-Length before anything
    reads them, and while reading a chunked one; and bodies slower than `read_timeout_s`."""

    def __init__(self, app: Any, read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.app = app
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"request body is larger than {MAX_BODY_BYTES} bytes"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await _error(413, "usage", too_big)(scope, receive, send)
            return
        received = 0
        deadline = anyio.current_time() + self.read_timeout_s
        complete = False

        async def counted() -> Any:
            nonlocal received, complete
            if complete:  # the body is in; what follows is only the wait for a disconnect
                return await receive()
            message = None
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
            if message is None:
                raise StarletteHTTPException(
                    408, f"the request body did not arrive within {self.read_timeout_s:g}s"
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise StarletteHTTPException(413, too_big)
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, counted, send)


# --- the app --------------------------------------------------------------------------------


def exposed_settings(settings: Settings, providers: list[str] | None) -> Settings:
    """The settings narrowed to the providers `serve --provider` names (all when None)."""
    if not providers:
        return settings
    for name in providers:
        settings.provider(name)  # raises "no provider named ..."
    kept = {n: e for n, e in settings.providers.items() if n in providers}
    default = settings.default_provider if settings.default_provider in kept else providers[0]
    return Settings(kept, default, settings.layers)


class Api:
    """The routes' calls into the use-case layer: blocking, run on the app's thread pools,
    returning the API's bodies."""

    def __init__(
        self, settings: Settings, jobs: int, request_timeout_s: float, allow_local_exec: bool
    ) -> None:
        runner = Runner()
        runner.calls = deque(maxlen=256)  # type: ignore[assignment]  # a server runs for weeks
        self.service = Service(settings, runner, jobs=jobs)
        self.service.exec_on_this_machine = allow_local_exec
        # A provider slower than this is an error row, before the client gives up (60s).
        self.service.engine.max_deadline_s = request_timeout_s

    def providers(self) -> ProviderList:
        rows = []
        for row in self.service.provider_rows():
            unavailable = self.service.settings.provider(row["name"]).unavailable
            rows.append(
                ProviderInfo(
                    name=row["name"],
                    backend=row["backend"],
                    default=row["default"],
                    available=unavailable is None,
                    reason=unavailable,
                    unsupported={} if unavailable else row["unsupported"],
                )
            )
        return ProviderList(providers=rows)

    def exec_command(self, ref: str, provider: str | None, start: ExecStart) -> Command | None:
        """The host's transport command for an exec session; None: the host's ports are this
        machine's, connect to the port here."""
        if start.port is not None:
            return self.service.port_command(ref, start.port, provider)
        if start.shell:
            return self.service.shell_command(ref, provider, tty=start.tty)
        argv = start.argv or []
        return self.service.exec_command(ref, argv, provider, tty=start.tty, detach=start.detach)

    def list_hosts(self, providers: list[str] | None) -> HostList:
        result = self.service.list_hosts(providers)
        return HostList(hosts=result.hosts, errors=result.errors)

    def create(self, body: CreateHostBody) -> Host:
        return self.service.create_host(
            body.name,
            host_id=body.host_id,
            provider=body.provider,
            image=body.image,
            tags=body.tags,
            from_snapshot=body.from_snapshot,
            options=body.options,
            resources=resources.parse(
                cpus=body.cpus, memory=body.memory, disk=body.disk, gpu=body.gpu
            ),  # fmt: skip
            remote=True,
            idle_timeout=body.idle_timeout,
        )

    def _on_host(self, verb: str, ref: str, provider: str | None, **how: Any) -> Host:
        return self._run_on_host(self.service.prepare_on_hosts(verb, [ref], provider, **how))

    def _run_on_host(self, batch: Batch) -> Host:
        """Run a batch of one job on one host; the host as it was looked up."""
        if not batch.jobs and batch.unchanged:  # already stopped (or running): nothing to do
            return batch.unchanged[0]
        self.service.run_one(batch)
        host = batch.jobs[0].host
        assert host is not None
        return host

    def destroy(self, ref: str, provider: str | None, force: bool, purge: bool) -> Host:
        self.service.wait_for_create(ref)
        return self._on_host("destroy", ref, provider, force=force, purge=purge)

    def stop(self, ref: str, provider: str | None, snapshot: bool) -> Host:
        return self.service.refreshed(self._on_host("stop", ref, provider, snapshot=snapshot))

    def start(self, ref: str, provider: str | None, snapshot: str | None = None) -> Host:
        if snapshot is None:
            return self.service.refreshed(self._on_host("start", ref, provider))
        batch = self.service.prepare_restore(ref, snapshot, provider)
        return self.service.refreshed(self._run_on_host(batch))

    def tag(self, ref: str, provider: str | None, tags: dict[str, str], remove: list[str]) -> Host:
        batch = self.service.prepare_tag(ref, tags, remove, provider)
        return self.service.refreshed(self._run_on_host(batch))

    def touch(self, ref: str, provider: str | None) -> Host:
        return self.service.touch(ref, provider)

    def snapshot(self, ref: str, provider: str | None, name: str | None) -> Snapshot:
        return self.service.run_one(self.service.prepare_snapshot(ref, provider, name))

    def list_snapshots(self, providers: list[str] | None, host: str | None) -> SnapshotList:
        snaps, errors = self.service.list_snapshots(providers, host)
        return SnapshotList(snapshots=snaps, errors=errors)

    def delete_snapshot(self, ref: str, provider: str | None) -> Snapshot:
        batch = self.service.prepare_snapshot_delete([ref], provider)
        self.service.run_one(batch)
        snapshot = batch.jobs[0].snapshot
        assert snapshot is not None
        return snapshot


def _pool(size: int, what: str) -> Callable[..., Awaitable[Any]]:
    """Run blocking calls on at most `size` threads of their own; a call beyond that is a 503
    at once, not a queue that holds its caller (and its connection) for as long as the others."""
    limiter = anyio.CapacityLimiter(size)
    running = 0  # counted on the event loop: no await between the check and the count

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        nonlocal running
        if running >= size:
            raise ApiError(
                503,
                "busy",
                f"the server is busy ({size} {what} are running); retry shortly",
                {"Retry-After": "1"},
            )
        running += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
        finally:
            running -= 1

    return run


def create_app(
    settings: Settings,
    tokens: list[Token],
    *,
    jobs: int = 8,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    allow_local_exec: bool = False,
) -> FastAPI:
    service = Api(settings, jobs, request_timeout_s, allow_local_exec)
    # Reads and changes each have their own threads: many slow lists cannot hold up a create,
    # and neither can hold up health, which needs no thread.
    read = _pool(READ_THREADS, "reads")
    write = _pool(WRITE_THREADS, "changes")
    bearer = HTTPBearer(
        auto_error=False,
        description="A token from the server's --token-file ('ro:' lines are read-only).",
    )

    app = FastAPI(
        title="mngr",
        version=__version__,
        description="Hosts through named provider instances: the API of `mngr serve`.",
        openapi_url="/v1/openapi.json",  # behind the token, as every route but health
        docs_url=None,  # a browser page cannot send the bearer token
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.add_middleware(_BodyLimit, read_timeout_s=read_timeout_s)
    app.add_middleware(_Authenticate, auth=Auth(tokens))  # the outermost: before any body

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(MngrError)
    async def _mngr_error(request: Request, exc: MngrError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(status, exc.kind, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "usage", _validation_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not-found" if exc.status_code == 404 else "usage"
        return _error(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises it after this answer, so uvicorn logs the traceback.
        return _error(500, "internal", "internal server error (see the server's log)")

    # _Authenticate has checked the token; the dependency only declares it in the OpenAPI.
    Reader = Writer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    HostRef = Annotated[
        str, PathParam(pattern=HOST_REF_PATTERN, description="NAME, NAME.PROVIDER or host id.")
    ]
    SnapRef = Annotated[str, PathParam(pattern=NAME_PATTERN, description="Snapshot id or name.")]
    OneProvider = Annotated[
        str | None, Query(pattern=PROVIDER_PATTERN, description="Provider of the host.")
    ]
    Providers = Annotated[list[str] | None, Query(description="Only these providers (repeatable).")]

    def _checked(providers: list[str] | None) -> list[str] | None:
        if len(providers or []) > 64:
            raise UsageError("at most 64 providers")
        for name in providers or []:
            if not PROVIDER_NAME_RE.fullmatch(name):
                raise UsageError(f"invalid provider name {name!r}")
        return providers

    @app.get("/v1/health", response_model=Health, tags=["meta"])
    async def health() -> Health:  # on the event loop: answered however busy the pools are
        return Health(status="ok", version=__version__)

    @app.get("/v1/providers", response_model=ProviderList, tags=["providers"])
    async def list_providers(_: Reader) -> ProviderList:
        return await read(service.providers)

    @app.get("/v1/hosts", response_model=HostList, tags=["hosts"])
    async def list_hosts(_: Reader, provider: Providers = None) -> HostList:
        return await read(service.list_hosts, _checked(provider))

    @app.post("/v1/hosts", response_model=HostResult, status_code=201, tags=["hosts"])
    async def create_host(_: Writer, body: CreateHostBody) -> HostResult:
        return HostResult(host=await write(service.create, body))

    @app.delete("/v1/hosts/{ref}", response_model=HostResult, tags=["hosts"])
    async def destroy_host(
        _: Writer,
        ref: HostRef,
        provider: OneProvider = None,
        force: bool = False,
        purge: bool = False,
    ) -> HostResult:
        return HostResult(host=await write(service.destroy, ref, provider, force, purge))

    @app.post("/v1/hosts/{ref}/stop", response_model=HostResult, tags=["hosts"])
    async def stop_host(
        _: Writer,
        ref: HostRef,
        provider: OneProvider = None,
        body: Annotated[StopBody | None, Body()] = None,
    ) -> HostResult:
        return HostResult(
            host=await write(service.stop, ref, provider, bool(body and body.snapshot))
        )

    @app.post("/v1/hosts/{ref}/start", response_model=HostResult, tags=["hosts"])
    async def start_host(
        _: Writer,
        ref: HostRef,
        provider: OneProvider = None,
        body: Annotated[StartBody | None, Body()] = None,
    ) -> HostResult:
        return HostResult(host=await write(service.start, ref, provider, body and body.snapshot))

    @app.post("/v1/hosts/{ref}/tags", response_model=HostResult, tags=["hosts"])
    async def tag_host(
        _: Writer, ref: HostRef, body: TagBody, provider: OneProvider = None
    ) -> HostResult:
        return HostResult(host=await write(service.tag, ref, provider, body.set, body.remove))

    @app.post("/v1/hosts/{ref}/touch", response_model=HostResult, tags=["hosts"])
    async def touch_host(_: Writer, ref: HostRef, provider: OneProvider = None) -> HostResult:
        """Count the host as in use now: its idle timeout starts again."""
        return HostResult(host=await write(service.touch, ref, provider))

    @app.post(
        "/v1/hosts/{ref}/snapshots",
        response_model=SnapshotResult,
        status_code=201,
        tags=["snapshots"],
    )
    async def create_snapshot(
        _: Writer,
        ref: HostRef,
        provider: OneProvider = None,
        body: Annotated[SnapshotBody | None, Body()] = None,
    ) -> SnapshotResult:
        return SnapshotResult(
            snapshot=await write(service.snapshot, ref, provider, body and body.name)
        )

    @app.get("/v1/snapshots", response_model=SnapshotList, tags=["snapshots"])
    async def list_snapshots(
        _: Reader,
        provider: Providers = None,
        host: Annotated[
            str | None, Query(pattern=NAME_PATTERN, description="Only snapshots of this host.")
        ] = None,
    ) -> SnapshotList:
        return await read(service.list_snapshots, _checked(provider), host)

    @app.delete("/v1/snapshots/{ref}", response_model=SnapshotResult, tags=["snapshots"])
    async def delete_snapshot(
        _: Writer, ref: SnapRef, provider: OneProvider = None
    ) -> SnapshotResult:
        return SnapshotResult(snapshot=await write(service.delete_snapshot, ref, provider))

    @app.websocket("/v1/hosts/{ref}/exec")
    async def exec_on_host(
        websocket: WebSocket, ref: HostRef, provider: OneProvider = None
    ) -> None:
        from mngr import relay

        await websocket.accept()
        try:
            start = await _exec_start(websocket, read_timeout_s)
            command = await write(service.exec_command, ref, provider, start)
            session = await relay.start(command, start.port, start.tty, (start.cols, start.rows))
        except WebSocketDisconnect:
            return
        except (ApiError, MngrError) as exc:
            if isinstance(exc, MngrError) and status_of(exc) >= 500:
                log.warning("exec on %s: %s", ref, exc)
            text = exc.message if isinstance(exc, ApiError) else str(exc)
            await websocket.send_text(control("error", kind=exc.kind, message=text))
            await websocket.close()
            return
        await websocket.send_text(control("started"))
        await relay.relay(websocket, session)

    return app


async def _exec_start(websocket: WebSocket, read_timeout_s: float) -> ExecStart:
    """The exec route's first message, within the read timeout."""
    from pydantic import ValidationError

    message = None
    with anyio.move_on_after(read_timeout_s):
        message = await websocket.receive()
    if message is None:
        raise ApiError(408, "usage", f"no exec request within {read_timeout_s:g}s")
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        return ExecStart.model_validate_json(message.get("text") or "")
    except ValidationError as exc:
        raise UsageError(validation_message(exc.errors()[0])) from None


# --- serving --------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` -> (host, port). Port 0 picks a free port."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise UsageError(f"invalid --listen {listen!r}: use HOST:PORT (e.g. 127.0.0.1:8421)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid --listen {listen!r}: the port must be 0 to 65535")
    return host, port


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    address = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def connection_limits(max_connections: int) -> tuple[int, int]:
    """(connections, listen backlog) that fit the process's file descriptors, after raising
    its soft limit to the hard one: half for connections, a quarter for a burst of accepts
    (asyncio accepts up to the backlog at once), the rest for vendor calls and files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(1, min(max_connections, soft // 2)), max(8, min(2048, soft // 4))


BUSY_BODY = b'{"error": {"kind": "busy", "message": "the server has too many connections"}}'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
    % (len(BUSY_BODY), BUSY_BODY)
)


def guarded_protocol(max_connections: int, read_timeout_s: float) -> type:
    """uvicorn's h11 protocol with at most `max_connections` open, each given
    `read_timeout_s` to send a request's headers. At the limit, a new connection closes the
    one that has waited longest without finishing its headers (half-open, as a flood's are);
    when every connection is busy with a request, it is answered 503 and closed."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        waiting_since: float | None = None  # loop time since it owes a request's headers

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._wait_for_headers()
            if len(self.connections) > max_connections and not self._close_oldest_waiting():
                transport.write(BUSY_RESPONSE)
                transport.close()

        def _wait_for_headers(self) -> None:
            self.waiting_since = self.loop.time()
            self.loop.call_later(read_timeout_s, self._headers_overdue)

        def _headers_overdue(self) -> None:
            since = self.waiting_since
            if since is not None and self.loop.time() - since >= read_timeout_s * 0.99:
                self.transport.close()

        def _close_oldest_waiting(self) -> bool:
            waiting = [
                c
                for c in self.connections
                if c is not self and getattr(c, "waiting_since", None) is not None
            ]
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c.waiting_since)
            oldest.waiting_since = None
            oldest.transport.close()
            self.connections.discard(oldest)
            return True

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers are in
                self.waiting_since = None

        def handle_websocket_upgrade(self, event: Any) -> None:
            self.waiting_since = None  # a WebSocket's now: no more request headers to wait for
            super().handle_websocket_upgrade(event)

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._wait_for_headers()  # before super(): it may start a pipelined request
            super().on_response_complete()

    return GuardedH11


class RepeatFilter(logging.Filter):
    """Let one log line through at most `burst` times a minute: a flood of one error (a
    client storm, descriptors running out) must not fill the disk. The next one after a
    quiet minute says how many were left out."""

    def __init__(self, burst: int = 10, window_s: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = (record.name, record.levelno, text)
        now = time.monotonic()
        with self.lock:
            if len(self.seen) > 10_000:
                self.seen.clear()  # bounded memory, whatever the clients send
            start, count = self.seen.get(key, (now, 0))
            if now - start > self.window_s:
                if count > self.burst:
                    record.msg, record.args = f"{text} ({count - self.burst} more left out)", ()
                start, count = now, 0
            self.seen[key] = (start, count + 1)
        return count < self.burst


class AnsweredUpgradeFilter(logging.Filter):
    """uvicorn logs an error after each WebSocket upgrade the app answered with an HTTP status
    (a refused token), though that answer is complete; the exec route itself always accepts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "filters": {
        "repeats": {"()": RepeatFilter},
        "answered_upgrades": {"()": AnsweredUpgradeFilter},
    },
    # Everything to stderr. Access lines hold the method, path and status: never headers.
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "default",
            "stream": "ext://sys.stderr",
            "filters": ["repeats", "answered_upgrades"],
        }
    },
    "loggers": {
        name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
        for name in ("uvicorn", "uvicorn.access", "mngr.server", "asyncio")
    },
}


def serve(
    settings: Settings,
    *,
    listen: str,
    token_file: Path,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    insecure_http: bool = False,
    providers: list[str] | None = None,
    jobs: int = 8,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    read_timeout_s: float = READ_TIMEOUT_S,
    allow_local_exec: bool = False,
) -> None:
    """Check the flags, read the tokens, bind and serve until interrupted."""
    import uvicorn

    host, port = parse_listen(listen)
    for flag, value in (
        ("--request-timeout", request_timeout_s),
        ("--read-timeout", read_timeout_s),
    ):
        if not 0 < value < float("inf"):
            raise UsageError(f"{flag} must be a number of seconds above 0")
    if max_connections < 1:
        raise UsageError("--max-connections must be at least 1")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key must be given together")
    tls = tls_cert is not None
    if not tls and not is_loopback(host) and not insecure_http:
        raise UsageError(
            f"refusing to serve plain HTTP on non-loopback address {host!r}: tokens would "
            "cross the network in clear text; give --tls-cert and --tls-key, or "
            "--insecure-http if a trusted proxy terminates TLS"
        )
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise ConfigError(f"{path}: TLS file not found")
    warning = token_file_warning(token_file)
    tokens = load_tokens(token_file)
    if warning:
        sys.stderr.write(f"warning: {warning}\n")
    app = create_app(
        exposed_settings(settings, providers),
        tokens,
        jobs=jobs,
        request_timeout_s=request_timeout_s,
        read_timeout_s=read_timeout_s,
        allow_local_exec=allow_local_exec,
    )
    connections, backlog = connection_limits(max_connections)
    if connections < max_connections:
        sys.stderr.write(
            f"warning: serving at most {connections} connections, not {max_connections}: "
            "the process may open too few files (ulimit -n) for more\n"
        )
    config = uvicorn.Config(
        app,
        http=guarded_protocol(connections, read_timeout_s),
        backlog=backlog,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        log_config=LOG_CONFIG,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    try:
        config.load()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from None
    sock = _bind(host, port, backlog)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    sys.stderr.write(
        f"mngr serve: listening on {'https' if tls else 'http'}://{shown}:{bound} "
        f"(pid {os.getpid()})\n"
    )
    sys.stderr.flush()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
