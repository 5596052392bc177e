"""A local stand-in of Modal's API for the real SDK: a gRPC server on 127.0.0.1 built on the
service bases and message types the SDK ships (`modal_proto`), served with grpclib (an SDK
dependency), plus the small HTTP block store a Volume's file contents go through.

Only the calls the shim's SDK calls make are answered; any other call is UNIMPLEMENTED and
noted in `unanswered`, so a test sees when the SDK starts asking for something new. State
lives in memory. A sandbox is a temp directory; `exec` runs the command for real as a local
process in it (the simplest faithful exec: real stdin, stdout, stderr and exit code), and a
snapshot image is a copy of that directory. Every call must carry the token it was given.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpclib.const
import grpclib.server
from aiohttp import web
from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from modal_proto import api_grpc, api_pb2, task_command_router_grpc
from modal_proto import task_command_router_pb2 as router_pb2

PAGE = 25  # sandboxes per SandboxList answer (StandIn.page; a test may make it smaller)
TAG_RULE = re.compile(r"^[A-Za-z0-9._-]{1,63}$")  # the SDK's rule for App tags, held here too
TTL_NO_EXPIRY = -1  # ttl_seconds of a snapshot asked never to expire (the SDK's sentinel)


def _ids(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):022d}"  # a V1 sandbox id has 22 characters


def _jwt(payload: dict[str, Any]) -> str:
    part = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"e30.{part}.sig"


@dataclass
class Sandbox:
    id: str
    app_id: str
    name: str
    tags: dict[str, str]
    root: Path
    created: float
    spec: dict[str, Any]
    finished: bool = False


@dataclass
class Exec:
    process: asyncio.subprocess.Process
    output: dict[int, bytearray] = field(default_factory=lambda: {1: bytearray(), 2: bytearray()})
    closed: dict[int, bool] = field(default_factory=lambda: {1: False, 2: False})
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    code: int | None = None


class State:
    """Modal's side, in memory: apps, sandboxes, images, volumes and their files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.apps: dict[tuple[str, str], str] = {}  # (environment, name) -> app id
        self.sandboxes: dict[str, Sandbox] = {}
        self.images: dict[str, Path | None] = {}  # image id -> its files (None: a base image)
        self.deleted_images: set[str] = set()
        self.image_ttls: dict[str, int] = {}  # snapshot image -> ttl_seconds asked for
        self.volumes: dict[tuple[str, str], str] = {}  # (environment, name) -> volume id
        self.files: dict[str, dict[str, bytes]] = {}  # volume id -> path -> contents
        self.dicts: dict[tuple[str, str], str] = {}  # (environment, name) -> dict id
        self.entries: dict[str, dict[bytes, bytes]] = {}  # dict id -> serialized key -> value
        self.blocks: dict[str, bytes] = {}  # sha256 hex -> block
        self.execs: dict[str, Exec] = {}
        self.calls: list[str] = []
        self.requests: list[tuple[str, Any]] = []  # (method, request) of each one-message call
        self.faults: dict[str, tuple[Status, str]] = {}  # method -> the error it answers with
        self.unanswered: list[str] = []
        self.new_app, self.new_sandbox, self.new_image = _ids("ap"), _ids("sb"), _ids("im")
        self.new_volume, self.new_dict = _ids("vo"), _ids("di")


class ModalAPI:
    """The control plane: `/modal.client.ModalClient/*`."""

    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.s = server.state

    # --- client, auth, environment ---------------------------------------------------------

    async def ClientHello(self, req: empty_pb2.Empty) -> api_pb2.ClientHelloResponse:
        return api_pb2.ClientHelloResponse()

    async def AuthTokenGet(self, req: api_pb2.AuthTokenGetRequest) -> api_pb2.AuthTokenGetResponse:
        return api_pb2.AuthTokenGetResponse(token=_jwt({"exp": int(time.time()) + 3600}))

    async def EnvironmentGetOrCreate(
        self, req: api_pb2.EnvironmentGetOrCreateRequest
    ) -> api_pb2.EnvironmentGetOrCreateResponse:
        name = req.deployment_name or "main"
        settings = api_pb2.EnvironmentSettings(image_builder_version="2025.06")
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id=f"en-{name}",
            metadata=api_pb2.EnvironmentMetadata(name=name, settings=settings),
        )

    # --- apps --------------------------------------------------------------------------------

    async def AppGetOrCreate(
        self, req: api_pb2.AppGetOrCreateRequest
    ) -> api_pb2.AppGetOrCreateResponse:
        key = (req.environment_name, req.app_name)
        if key not in self.s.apps:
            if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found")
            self.s.apps[key] = self.s.new_app()
        return api_pb2.AppGetOrCreateResponse(app_id=self.s.apps[key])

    # --- images ------------------------------------------------------------------------------

    async def ImageGetOrCreate(
        self, req: api_pb2.ImageGetOrCreateRequest
    ) -> api_pb2.ImageGetOrCreateResponse:
        image_id = self.s.new_image()
        self.s.images[image_id] = None
        return api_pb2.ImageGetOrCreateResponse(
            image_id=image_id,
            result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS),
            metadata=api_pb2.ImageMetadata(),
        )

    async def ImageFromId(self, req: api_pb2.ImageFromIdRequest) -> api_pb2.ImageFromIdResponse:
        if req.image_id not in self.s.images:
            raise GRPCError(Status.NOT_FOUND, f"Image {req.image_id} not found")
        return api_pb2.ImageFromIdResponse(image_id=req.image_id, metadata=api_pb2.ImageMetadata())

    async def ImageDelete(self, req: api_pb2.ImageDeleteRequest) -> empty_pb2.Empty:
        if self.s.images.pop(req.image_id, "missing") == "missing":
            raise GRPCError(Status.NOT_FOUND, f"Image {req.image_id} not found")
        self.s.deleted_images.add(req.image_id)
        return empty_pb2.Empty()

    # --- sandboxes ---------------------------------------------------------------------------

    def _sandbox(self, sandbox_id: str) -> Sandbox:
        box = self.s.sandboxes.get(sandbox_id)
        if box is None:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return box

    async def SandboxCreate(
        self, req: api_pb2.SandboxCreateRequest
    ) -> api_pb2.SandboxCreateResponse:
        """V1 (the SDK's choice for a GPU sandbox): `sb-` and 22 characters."""
        return api_pb2.SandboxCreateResponse(sandbox_id=self._create(req, self.s.new_sandbox()).id)

    async def SandboxCreateV2(
        self, req: api_pb2.SandboxCreateV2Request
    ) -> api_pb2.SandboxCreateV2Response:
        """V2 (the SDK's default): any other id shape."""
        box = self._create(req, self.s.new_sandbox() + "V")  # its task id ends in V too
        return api_pb2.SandboxCreateV2Response(
            sandbox_id=box.id,
            task_id=_task(box.id),
            metadata=api_pb2.SandboxHandleMetadata(app_id=box.app_id),
            command_router_access=api_pb2.CommandRouterAccess(
                url=self.server.url, jwt=self.server.jwt
            ),
        )

    def _create(self, req: Any, sandbox_id: str) -> Sandbox:
        d = req.definition
        if d.image_id not in self.s.images:
            raise GRPCError(Status.NOT_FOUND, f"Image {d.image_id} not found")
        taken = [
            b
            for b in self.s.sandboxes.values()
            if b.app_id == req.app_id and b.name == d.name and not b.finished
        ]
        if d.name and taken:
            raise GRPCError(Status.ALREADY_EXISTS, f"Sandbox named {d.name!r} already exists")
        box = Sandbox(
            id=sandbox_id,
            app_id=req.app_id,
            name=d.name,
            tags=_tags(req.tags),
            root=self.s.root / "sandboxes" / str(len(self.s.sandboxes)),
            created=time.time() + len(self.s.sandboxes) * 1e-3,  # unique: pages end on it
            spec={
                "entrypoint": list(d.entrypoint_args),
                "image_id": d.image_id,
                "milli_cpu": d.resources.milli_cpu,
                "memory_mb": d.resources.memory_mb,
                "gpu": d.resources.gpu_config.gpu_type,
                "gpu_count": d.resources.gpu_config.count,
                "timeout_secs": d.timeout_secs,
                "regions": list(d.scheduler_placement.regions),
            },
        )
        files = self.s.images[d.image_id]
        if files is None:
            box.root.mkdir(parents=True)
        else:
            shutil.copytree(files, box.root, symlinks=True)
        self.s.sandboxes[box.id] = box
        return box

    def _info(self, box: Sandbox) -> api_pb2.SandboxInfo:
        return api_pb2.SandboxInfo(
            id=box.id,
            app_id=box.app_id,
            name=box.name,
            created_at=box.created,
            tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in box.tags.items()],
            task_info=api_pb2.TaskInfo(id=_task(box.id), result=_result(box)),
            metadata=api_pb2.SandboxHandleMetadata(app_id=box.app_id),
        )

    async def SandboxListV2(self, req: api_pb2.SandboxListRequest) -> api_pb2.SandboxListResponse:
        wanted = {t.tag_name: t.tag_value for t in req.tags}
        boxes = [
            b
            for b in self.s.sandboxes.values()
            if (not req.app_id or b.app_id == req.app_id)
            and (req.include_finished or not b.finished)
            and (not req.before_timestamp or b.created < req.before_timestamp)
            and all(b.tags.get(k) == v for k, v in wanted.items())
        ]
        boxes.sort(key=lambda b: b.created, reverse=True)
        self.server.pages += 1
        return api_pb2.SandboxListResponse(
            sandboxes=[self._info(b) for b in boxes[: self.server.page]]
        )

    async def SandboxWait(self, req: api_pb2.SandboxWaitRequest) -> api_pb2.SandboxWaitResponse:
        box = self._sandbox(req.sandbox_id)
        return api_pb2.SandboxWaitResponse(
            result=_result(box), metadata=api_pb2.SandboxHandleMetadata(app_id=box.app_id)
        )

    async def SandboxGetTaskId(
        self, req: api_pb2.SandboxGetTaskIdRequest
    ) -> api_pb2.SandboxGetTaskIdResponse:
        box = self._sandbox(req.sandbox_id)
        if box.finished:
            return api_pb2.SandboxGetTaskIdResponse(task_result=_result(box))
        return api_pb2.SandboxGetTaskIdResponse(task_id=_task(box.id))

    async def SandboxGetCommandRouterAccess(
        self, req: api_pb2.SandboxGetCommandRouterAccessRequest
    ) -> api_pb2.SandboxGetCommandRouterAccessResponse:
        return api_pb2.SandboxGetCommandRouterAccessResponse(
            url=self.server.url, jwt=self.server.jwt
        )

    async def TaskGetCommandRouterAccess(
        self, req: api_pb2.TaskGetCommandRouterAccessRequest
    ) -> api_pb2.TaskGetCommandRouterAccessResponse:
        return api_pb2.TaskGetCommandRouterAccessResponse(url=self.server.url, jwt=self.server.jwt)

    async def SandboxTagsGet(
        self, req: api_pb2.SandboxTagsGetRequest
    ) -> api_pb2.SandboxTagsGetResponse:
        box = self._sandbox(req.sandbox_id)
        tags = [api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in box.tags.items()]
        return api_pb2.SandboxTagsGetResponse(tags=tags)

    async def SandboxTagsSet(self, req: api_pb2.SandboxTagsSetRequest) -> empty_pb2.Empty:
        self._sandbox(req.sandbox_id).tags = _tags(req.tags)
        return empty_pb2.Empty()

    async def SandboxTerminate(
        self, req: api_pb2.SandboxTerminateRequest
    ) -> api_pb2.SandboxTerminateResponse:
        box = self._sandbox(req.sandbox_id)
        box.finished = True
        return api_pb2.SandboxTerminateResponse(existing_result=_result(box))

    # --- volumes (v2: file contents go through the HTTP block store) ------------------------

    def _volume(self, volume_id: str) -> dict[str, bytes]:
        if volume_id not in self.s.files:
            raise GRPCError(Status.NOT_FOUND, f"Volume {volume_id} not found")
        return self.s.files[volume_id]

    async def VolumeGetOrCreate(
        self, req: api_pb2.VolumeGetOrCreateRequest
    ) -> api_pb2.VolumeGetOrCreateResponse:
        key = (req.environment_name, req.deployment_name)
        if key not in self.s.volumes:
            if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"Volume '{req.deployment_name}' not found")
            self.s.volumes[key] = self.s.new_volume()
            self.s.files[self.s.volumes[key]] = {}
        v2 = api_pb2.VOLUME_FS_VERSION_V2
        return api_pb2.VolumeGetOrCreateResponse(
            volume_id=self.s.volumes[key],
            version=v2,
            metadata=api_pb2.VolumeMetadata(version=v2, name=req.deployment_name),
        )

    async def VolumeListFiles2(
        self, req: api_pb2.VolumeListFiles2Request
    ) -> AsyncIterator[api_pb2.VolumeListFiles2Response]:
        files = self._volume(req.volume_id)
        prefix = req.path.strip("/")
        entries = [
            api_pb2.FileEntry(path=path, type=api_pb2.FileEntry.FILE, size=len(data))
            for path, data in sorted(files.items())
            if not prefix or path == prefix or path.startswith(prefix + "/")
            if req.recursive or "/" not in path.removeprefix(prefix).strip("/")
        ]
        yield api_pb2.VolumeListFiles2Response(entries=entries)

    async def VolumeGetFile2(
        self, req: api_pb2.VolumeGetFile2Request
    ) -> api_pb2.VolumeGetFile2Response:
        data = self._volume(req.volume_id).get(req.path.strip("/"))
        if data is None:
            raise GRPCError(Status.NOT_FOUND, f"No such file: {req.path}")
        sha = hashlib.sha256(data).hexdigest()
        self.s.blocks[sha] = data
        return api_pb2.VolumeGetFile2Response(
            get_urls=[f"{self.server.blocks_url}/block/{sha}"],
            size=len(data),
            start=0,
            len=len(data),
        )

    async def VolumePutFiles2(
        self, req: api_pb2.VolumePutFiles2Request
    ) -> api_pb2.VolumePutFiles2Response:
        files = self._volume(req.volume_id)
        missing = [
            api_pb2.VolumePutFiles2Response.MissingBlock(
                file_index=i,
                block_index=j,
                put_url=f"{self.server.blocks_url}/block/{b.contents_sha256.hex()}",
            )
            for i, f in enumerate(req.files)
            for j, b in enumerate(f.blocks)
            if b.contents_sha256.hex() not in self.s.blocks
        ]
        if missing:
            return api_pb2.VolumePutFiles2Response(missing_blocks=missing)
        for f in req.files:
            path = f.path.strip("/")
            if req.disallow_overwrite_existing_files and path in files:
                raise GRPCError(Status.ALREADY_EXISTS, f"{f.path} already exists")
            data = b"".join(self.s.blocks[b.contents_sha256.hex()] for b in f.blocks)
            files[path] = data[: f.size]
        return api_pb2.VolumePutFiles2Response()

    async def VolumeRemoveFile2(self, req: api_pb2.VolumeRemoveFile2Request) -> empty_pb2.Empty:
        if self._volume(req.volume_id).pop(req.path.strip("/"), None) is None:
            raise GRPCError(Status.NOT_FOUND, f"No such file: {req.path}")
        return empty_pb2.Empty()

    # --- dicts (where an older mngr kept its records) ---------------------------------------

    async def DictGetOrCreate(
        self, req: api_pb2.DictGetOrCreateRequest
    ) -> api_pb2.DictGetOrCreateResponse:
        key = (req.environment_name, req.deployment_name)
        if key not in self.s.dicts:
            if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                raise GRPCError(Status.NOT_FOUND, f"Dict '{req.deployment_name}' not found")
            self.s.dicts[key] = self.s.new_dict()
            self.s.entries[self.s.dicts[key]] = {}
        return api_pb2.DictGetOrCreateResponse(
            dict_id=self.s.dicts[key], metadata=api_pb2.DictMetadata(name=req.deployment_name)
        )

    def _dict(self, dict_id: str) -> dict[bytes, bytes]:
        if dict_id not in self.s.entries:
            raise GRPCError(Status.NOT_FOUND, f"Dict {dict_id} not found")
        return self.s.entries[dict_id]

    async def DictUpdate(self, req: api_pb2.DictUpdateRequest) -> api_pb2.DictUpdateResponse:
        self._dict(req.dict_id).update({e.key: e.value for e in req.updates})
        return api_pb2.DictUpdateResponse(created=True)

    async def DictContents(
        self, req: api_pb2.DictContentsRequest
    ) -> AsyncIterator[api_pb2.DictEntry]:
        for key, value in list(self._dict(req.dict_id).items()):
            yield api_pb2.DictEntry(
                key=key if req.keys else b"", value=value if req.values else b""
            )

    async def DictDelete(self, req: api_pb2.DictDeleteRequest) -> empty_pb2.Empty:
        self._dict(req.dict_id)
        del self.s.entries[req.dict_id]
        self.s.dicts = {k: v for k, v in self.s.dicts.items() if v != req.dict_id}
        return empty_pb2.Empty()

    # The V2 backend's calls take the V1 messages.
    SandboxWaitV2 = SandboxWait
    SandboxGetTaskIdV2 = SandboxGetTaskId
    SandboxTagsGetV2 = SandboxTagsGet
    SandboxTagsSetV2 = SandboxTagsSet
    SandboxTerminateV2 = SandboxTerminate


class Router:
    """The task command router (`/modal.task_command_router.TaskCommandRouter/*`): exec."""

    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.s = server.state

    def _check(self, task_id: str) -> Sandbox:
        box = self.s.sandboxes.get(task_id.replace("ta-", "sb-", 1))
        if box is None or box.finished:
            raise GRPCError(Status.NOT_FOUND, f"Task {task_id} not found or finished")
        return box

    def _exec(self, exec_id: str) -> Exec:
        run = self.s.execs.get(exec_id)
        if run is None:
            raise GRPCError(Status.NOT_FOUND, f"Exec {exec_id} not found")
        return run

    async def TaskExecStart(
        self, req: router_pb2.TaskExecStartRequest
    ) -> router_pb2.TaskExecStartResponse:
        box = self._check(req.task_id)
        try:
            process = await asyncio.create_subprocess_exec(
                *req.command_args,
                cwd=box.root,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            message = f"cannot run {req.command_args[0]!r}: {exc}"
            raise GRPCError(Status.INVALID_ARGUMENT, message) from None
        run = Exec(process)
        self.s.execs[req.exec_id] = run
        asyncio.ensure_future(self._collect(run))
        return router_pb2.TaskExecStartResponse()

    async def _collect(self, run: Exec) -> None:
        async def pump(fd: int, stream: asyncio.StreamReader) -> None:
            while chunk := await stream.read(65536):
                run.output[fd] += chunk
                run.changed.set()
            run.closed[fd] = True
            run.changed.set()

        await asyncio.gather(pump(1, run.process.stdout), pump(2, run.process.stderr))
        run.code = await run.process.wait()
        run.changed.set()

    async def TaskExecStdioRead(
        self, req: router_pb2.TaskExecStdioReadRequest
    ) -> AsyncIterator[router_pb2.TaskExecStdioReadResponse]:
        run = self._exec(req.exec_id)
        fd = 2 if req.file_descriptor == router_pb2.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDERR else 1
        offset = req.offset
        while True:
            run.changed.clear()
            if len(run.output[fd]) > offset:
                data = bytes(run.output[fd][offset:])
                offset += len(data)
                yield router_pb2.TaskExecStdioReadResponse(data=data)
                continue
            if run.closed[fd]:
                return
            await run.changed.wait()

    async def TaskExecStdinWrite(
        self, req: router_pb2.TaskExecStdinWriteRequest
    ) -> router_pb2.TaskExecStdinWriteResponse:
        stdin = self._exec(req.exec_id).process.stdin
        try:
            if req.data:
                stdin.write(req.data)
                await stdin.drain()
            if req.eof:
                stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command ended without reading all of its input
        return router_pb2.TaskExecStdinWriteResponse()

    async def TaskExecPoll(
        self, req: router_pb2.TaskExecPollRequest
    ) -> router_pb2.TaskExecPollResponse:
        run = self._exec(req.exec_id)
        return router_pb2.TaskExecPollResponse(**({} if run.code is None else _exit(run)))

    async def TaskExecWait(
        self, req: router_pb2.TaskExecWaitRequest
    ) -> router_pb2.TaskExecWaitResponse:
        run = self._exec(req.exec_id)
        while run.code is None:
            run.changed.clear()
            await run.changed.wait()
        return router_pb2.TaskExecWaitResponse(**_exit(run))

    async def TaskSnapshotFilesystem(
        self, req: router_pb2.TaskSnapshotFilesystemRequest
    ) -> router_pb2.TaskSnapshotFilesystemResponse:
        box = self._check(req.task_id)
        image_id = self.s.new_image()
        files = self.s.root / "images" / image_id
        shutil.copytree(box.root, files, symlinks=True)
        self.s.images[image_id] = files
        self.s.image_ttls[image_id] = req.ttl_seconds
        return router_pb2.TaskSnapshotFilesystemResponse(image_id=image_id)


def _tags(tags: Any) -> dict[str, str]:
    for tag in tags:
        for text in (tag.tag_name, tag.tag_value):
            if not TAG_RULE.fullmatch(text):
                raise GRPCError(Status.INVALID_ARGUMENT, f"Invalid tag: {text!r}")
    return {tag.tag_name: tag.tag_value for tag in tags}


def _task(sandbox_id: str) -> str:
    return sandbox_id.replace("sb-", "ta-", 1)


def _result(box: Sandbox) -> api_pb2.GenericResult:
    if not box.finished:
        return api_pb2.GenericResult()  # status unspecified: still running
    return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_TERMINATED)


def _exit(run: Exec) -> dict[str, int]:
    code = run.code or 0
    return {"signal": -code} if code < 0 else {"code": code}


def _handlers(
    base: type, impl: Any, check: Callable[[Any], None], server: StandIn
) -> dict[str, grpclib.const.Handler]:
    """Every method of the SDK's service base, answered by `impl` where it has the method and
    UNIMPLEMENTED (noted) where it has not; `check` sees each call's metadata first."""
    stub = type("Every", (base,), {name: None for name in base.__abstractmethods__})
    mapping = stub.__mapping__(stub())
    out = {}
    for path, handler in mapping.items():
        name = path.rsplit("/", 1)[1]
        method = getattr(impl, name, None)
        out[path] = grpclib.const.Handler(
            _serve(name, method, handler.cardinality, check, server),
            handler.cardinality,
            handler.request_type,
            handler.reply_type,
        )
    return out


def _serve(
    name: str, method: Any, cardinality: Any, check: Callable[[Any], None], server: StandIn
) -> Any:
    Card = grpclib.const.Cardinality

    async def handle(stream: grpclib.server.Stream) -> None:
        server.state.calls.append(name)
        check(stream.metadata)
        if name in server.state.faults:
            raise GRPCError(*server.state.faults[name])
        if method is None:
            server.state.unanswered.append(name)
            raise GRPCError(Status.UNIMPLEMENTED, f"the stand-in does not answer {name}")
        if cardinality in (Card.STREAM_UNARY, Card.STREAM_STREAM):
            await method(stream)
            return
        request = await stream.recv_message()
        server.state.requests.append((name, request))
        if cardinality == Card.UNARY_STREAM:
            async for reply in method(request):
                await stream.send_message(reply)
        else:
            await stream.send_message(await method(request))

    return handle


class StandIn:
    """The stand-in, served from its own thread: `url` for MODAL_SERVER_URL."""

    def __init__(self, token_id: str, token_secret: str, root: Path | None = None) -> None:
        self.tokens = {(token_id, token_secret)}
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="modal-standin-")
        self.state = State(Path(root or self._tmp.name))
        self.state.root.mkdir(parents=True, exist_ok=True)
        self.url = ""
        self.jwt = _jwt({"exp": int(time.time()) + 86400})
        self.page = PAGE
        self.pages = 0  # SandboxList answers given
        self.blocks_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._grpc: grpclib.server.Server | None = None
        self._http: web.AppRunner | None = None

    def check_token(self, metadata: Any) -> None:
        pair = (metadata.get("x-modal-token-id"), metadata.get("x-modal-token-secret"))
        if pair not in self.tokens:
            raise GRPCError(Status.UNAUTHENTICATED, "Token validation failed")

    def check_jwt(self, metadata: Any) -> None:
        if metadata.get("authorization") != f"Bearer {self.jwt}":
            raise GRPCError(Status.UNAUTHENTICATED, "invalid command router token")

    def start(self) -> StandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        handlers = _handlers(api_grpc.ModalClientBase, ModalAPI(self), self.check_token, self)
        router = task_command_router_grpc.TaskCommandRouterBase
        handlers |= _handlers(router, Router(self), self.check_jwt, self)
        self._grpc = grpclib.server.Server([_Mapping(handlers)])
        await self._grpc.start("127.0.0.1", 0)
        port = self._grpc._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_put("/block/{sha}", self._put_block)
        app.router.add_get("/block/{sha}", self._get_block)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, "127.0.0.1", 0)
        await site.start()
        self.blocks_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def _put_block(self, request: web.Request) -> web.Response:
        data = await request.read()
        sha = hashlib.sha256(data).hexdigest()
        if sha != request.match_info["sha"]:
            return web.Response(status=400, text="sha256 mismatch")
        self.state.blocks[sha] = data
        return web.Response(body=sha.encode())

    async def _get_block(self, request: web.Request) -> web.Response:
        data = self.state.blocks.get(request.match_info["sha"])
        return web.Response(status=404) if data is None else web.Response(body=data)

    def call(self, method: str, request: Any) -> Any:
        """Answer one control-plane call from the test (as another Modal client would make it)."""
        api = ModalAPI(self)
        return asyncio.run_coroutine_threadsafe(getattr(api, method)(request), self._loop).result(
            30
        )

    def stop(self) -> None:
        async def close() -> None:
            for run in list(self.state.execs.values()):
                if run.code is None:
                    run.process.kill()
                    await run.process.wait()
            if self._grpc:
                self._grpc.close()
                await self._grpc.wait_closed()
            if self._http:
                await self._http.cleanup()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop.close()
        if self._tmp:
            self._tmp.cleanup()


class _Mapping:
    def __init__(self, handlers: dict[str, grpclib.const.Handler]) -> None:
        self._handlers = handlers

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return self._handlers
