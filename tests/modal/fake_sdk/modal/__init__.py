"""A test double of the `modal` SDK: the few calls the shim makes, with the SDK's signatures
(modal 1.x: modal/app.py, modal/sandbox.py, modal/_image.py, modal/dict.py,
modal/container_process.py, modal/client.py), keeping its state in $FAKE_MODAL_DIR.

Put first on PYTHONPATH by the tests, so `python -m mngr_backends.modal_shim` imports it.

- A sandbox is a JSON record plus a directory (its filesystem); `exec` runs the command
  for real with that directory as working directory, so files survive snapshot and start.
- Credentials as the SDK reads them: MODAL_TOKEN_ID + MODAL_TOKEN_SECRET, or the profile
  ($MODAL_PROFILE, else the first) of ~/.modal.toml; without either every call raises
  AuthError("Token missing. ..."), as Client.from_env does.
  $FAKE_MODAL_TOKENS="id:secret" makes any other token an AuthError (server refusal).
- $FAKE_MODAL_FAULT="<op>:<kind>[,...]" (op like "Sandbox.list", or "*"): kind is hang
  (sleep past any deadline), unreachable (ConnectionError), notfound, error, or chatty
  (prints to stdout and warns on stderr, as SDK progress output and deprecations do).
- Every call is appended to $FAKE_MODAL_DIR/calls.jsonl with its arguments and the argv of
  the process that made it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modal import exception
from modal.exception import (
    AlreadyExistsError,
    AuthError,
    ConnectionError,
    Error,
    InvalidError,
    NotFoundError,
)

__version__ = "1.5.4+fake"
__all__ = ["App", "Error", "Image", "Sandbox", "Volume", "exception"]

_PIPE = subprocess.PIPE


# --- state, credentials, faults --------------------------------------------------------------


def _dir() -> Path:
    path = Path(os.environ["FAKE_MODAL_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _state() -> Iterator[dict[str, Any]]:
    """The whole service state, locked across processes while it is read and changed."""
    root = _dir()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = root / "state.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        for key in ("apps", "sandboxes", "images", "volumes"):
            data.setdefault(key, {})
        yield data
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)


def _call(op: str, **args: Any) -> None:
    """One RPC: log it, check credentials as Client.from_env does, then apply any fault."""
    with open(_dir() / "calls.jsonl", "a") as log:
        log.write(json.dumps({"op": op, "args": args, "argv": sys.argv}, default=repr) + "\n")
    token_id, token_secret = _credentials()
    expected = os.environ.get("FAKE_MODAL_TOKENS")
    if expected and f"{token_id}:{token_secret}" != expected:
        raise AuthError("Invalid token: the token id or secret is not recognised")
    for item in filter(None, os.environ.get("FAKE_MODAL_FAULT", "").split(",")):
        where, _, kind = item.rpartition(":")
        if where not in ("*", op):
            continue
        if kind == "hang":
            time.sleep(3600)
        if kind == "unreachable":
            raise ConnectionError("Could not connect to the Modal server.")
        if kind == "notfound":
            raise NotFoundError(f"{op}: object not found")
        if kind == "error":
            raise exception.InternalError(f"{op}: internal error")
        if kind == "chatty":
            print(f"Building image for {op}...")  # noqa: T201 - what the SDK's output does
            warnings.warn("this call is deprecated", UserWarning, stacklevel=2)


def _credentials() -> tuple[str, str]:
    """As Client.from_env: MODAL_TOKEN_ID/SECRET, else the profile of ~/.modal.toml."""
    token_id = os.environ.get("MODAL_TOKEN_ID")
    token_secret = os.environ.get("MODAL_TOKEN_SECRET")
    if token_id and token_secret:
        return token_id, token_secret
    config_path = Path.home() / ".modal.toml"
    profiles = tomllib.loads(config_path.read_text()) if config_path.exists() else {}
    wanted = os.environ.get("MODAL_PROFILE")
    if wanted and wanted not in profiles:
        raise AuthError(
            f"Modal profile '{wanted}' was not found in {config_path}. Run `modal profile list`"
            f" to see available profiles, or `modal token new --profile {wanted}` to configure it."
        )
    profile = profiles.get(wanted) if wanted else next(iter(profiles.values()), None)
    if not profile or not profile.get("token_id") or not profile.get("token_secret"):
        raise AuthError(
            "Token missing. Could not authenticate client."
            " If you have token credentials, see modal.com/docs/sdk/py/latest/config"
            " for setup help."
            " If you are a new user, register an account at modal.com, then run `modal token new`."
        )
    return profile["token_id"], profile["token_secret"]


_TAG_RULE = re.compile(r"^[A-Za-z0-9._-]{1,63}$")


def _check_tags(tags: dict[str, str] | None) -> None:
    """Modal's tag rule (modal/_utils/name_utils.py check_tag_dict), held to strictly here."""
    for key, value in (tags or {}).items():
        for what, text in (("key", key), ("value", value)):
            if not isinstance(text, str) or not _TAG_RULE.fullmatch(text):
                raise InvalidError(f"Invalid tag {what}: {text!r}.")


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _env(environment_name: str | None) -> str:
    return environment_name or os.environ.get("MODAL_ENVIRONMENT") or "main"


# --- App ------------------------------------------------------------------------------------


class App:
    def __init__(self, name: str | None = None, app_id: str | None = None) -> None:
        self._name = name
        self._app_id = app_id

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def app_id(self) -> str | None:
        return self._app_id

    @staticmethod
    def lookup(
        name: str,
        *,
        client: Any = None,
        environment_name: str | None = None,
        create_if_missing: bool = False,
    ) -> App:
        _call("App.lookup", name=name, environment_name=environment_name, create=create_if_missing)
        key = f"{_env(environment_name)}/{name}"
        with _state() as state:
            if key not in state["apps"]:
                if not create_if_missing:
                    raise NotFoundError(
                        f"App '{name}' not found in environment '{_env(environment_name)}'"
                    )
                state["apps"][key] = _new_id("ap")
            return App(name, state["apps"][key])


# --- Image ----------------------------------------------------------------------------------


class Image:
    """A lazily defined image; it gets an object id when first used (as the SDK hydrates)."""

    def __init__(self, object_id: str | None = None, source: str = "") -> None:
        self._object_id = object_id
        self._source = source

    @property
    def object_id(self) -> str:
        if self._object_id is None:
            raise InvalidError("Image has not been hydrated")
        return self._object_id

    @classmethod
    def from_id(cls, image_id: str, client: Any = None) -> Image:
        return cls(image_id)

    @staticmethod
    def from_registry(
        tag: str,
        secret: Any = None,
        *,
        setup_dockerfile_commands: list[str] = [],  # noqa: B006 - the SDK's signature
        force_build: bool = False,
        add_python: str | None = None,
    ) -> Image:
        return Image(None, f"registry:{tag}")

    @staticmethod
    def debian_slim(python_version: str | None = None, force_build: bool = False) -> Image:
        return Image(None, "debian_slim")

    def _hydrate(self, state: dict[str, Any]) -> str:
        if self._object_id is None:
            digest = hashlib.sha1(self._source.encode()).hexdigest()[:12]
            self._object_id = f"im-{digest}"
            state["images"].setdefault(self._object_id, {"source": self._source})
            (_dir() / "images" / self._object_id).mkdir(parents=True, exist_ok=True)
        if self._object_id not in state["images"]:
            raise NotFoundError(f"Image {self._object_id} not found")
        return self._object_id


# --- Sandbox --------------------------------------------------------------------------------


class Sandbox:
    def __init__(self, sandbox_id: str) -> None:
        self._object_id = sandbox_id

    @property
    def object_id(self) -> str:
        return self._object_id

    def _fs(self) -> Path:
        return _dir() / "fs" / self._object_id

    @staticmethod
    def create(
        *args: str,
        app: App | None = None,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        image: Image | None = None,
        env: dict[str, str | None] | None = None,
        secrets: Any = None,
        network_file_systems: dict = {},  # noqa: B006 - the SDK's signature
        timeout: int = 300,
        idle_timeout: int | None = None,
        workdir: str | None = None,
        gpu: str | None = None,
        cloud: str | None = None,
        region: str | Sequence[str] | None = None,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        block_network: bool = False,
        volumes: dict = {},  # noqa: B006 - the SDK's signature
        pty: bool = False,
        client: Any = None,
        environment_name: str | None = None,
    ) -> Sandbox:
        _call(
            "Sandbox.create",
            args=list(args),
            name=name,
            tags=tags,
            timeout=timeout,
            gpu=gpu,
            region=region,
            cpu=cpu,
            memory=memory,
        )
        _check_tags(tags)
        if app is None or app.app_id is None:
            raise InvalidError("App has not been initialized yet. Use modal.App.lookup().")
        image = image or Image.debian_slim()
        with _state() as state:
            image_id = image._hydrate(state)
            if name is not None and any(
                s["name"] == name and s["app_id"] == app.app_id and not s["finished"]
                for s in state["sandboxes"].values()
            ):
                raise AlreadyExistsError(f"Sandbox with name '{name}' already exists")
            sandbox_id = _new_id("sb")
            state["sandboxes"][sandbox_id] = {
                "id": sandbox_id,
                "app_id": app.app_id,
                "name": name,
                "tags": dict(tags or {}),
                "image_id": image_id,
                "args": list(args),
                "spec": {
                    "cpu": cpu,
                    "memory": memory,
                    "gpu": gpu,
                    "timeout": timeout,
                    "region": region,
                },
                "finished": False,
            }
        sandbox = Sandbox(sandbox_id)
        shutil.copytree(_dir() / "images" / image_id, sandbox._fs())
        return sandbox

    @staticmethod
    def list(
        *, app_id: str | None = None, tags: dict[str, str] | None = None, client: Any = None
    ) -> Iterator[Sandbox]:
        _call("Sandbox.list", app_id=app_id, tags=tags)
        with _state() as state:
            found = [
                s["id"]
                for s in state["sandboxes"].values()
                if not s["finished"]
                and (app_id is None or s["app_id"] == app_id)
                and all(s["tags"].get(k) == v for k, v in (tags or {}).items())
            ]
        return iter([Sandbox(i) for i in found])

    @staticmethod
    def from_id(sandbox_id: str, client: Any = None) -> Sandbox:
        _call("Sandbox.from_id", sandbox_id=sandbox_id)
        with _state() as state:
            if sandbox_id not in state["sandboxes"]:
                raise NotFoundError(f"Sandbox {sandbox_id} not found")
        return Sandbox(sandbox_id)

    def _record(self, state: dict[str, Any]) -> dict[str, Any]:
        return state["sandboxes"][self._object_id]

    def get_tags(self) -> dict[str, str]:
        _call("Sandbox.get_tags", sandbox_id=self._object_id)
        with _state() as state:
            return dict(self._record(state)["tags"])

    def set_tags(self, tags: dict[str, str], *, client: Any = None) -> None:
        _call("Sandbox.set_tags", sandbox_id=self._object_id, tags=tags)
        _check_tags(tags)
        with _state() as state:
            self._record(state)["tags"] = dict(tags)

    def poll(self) -> int | None:
        _call("Sandbox.poll", sandbox_id=self._object_id)
        with _state() as state:
            return 0 if self._record(state)["finished"] else None

    @property
    def returncode(self) -> int | None:
        with _state() as state:
            return 0 if self._record(state)["finished"] else None

    def terminate(self, *, wait: bool = False) -> int | None:
        _call("Sandbox.terminate", sandbox_id=self._object_id)
        with _state() as state:
            self._record(state)["finished"] = True
        return 0 if wait else None

    def snapshot_filesystem(self, timeout: int = 55, *, ttl: int | None = 30 * 24 * 3600) -> Image:
        _call("Sandbox.snapshot_filesystem", sandbox_id=self._object_id, timeout=timeout, ttl=ttl)
        image_id = _new_id("im")
        with _state() as state:
            if self._record(state)["finished"]:
                raise NotFoundError(f"Sandbox {self._object_id} has already finished")
            shutil.copytree(self._fs(), _dir() / "images" / image_id)
            state["images"][image_id] = {"source": f"snapshot:{self._object_id}"}
        return Image(image_id)

    def exec(
        self,
        *args: str,
        stdout: Any = _PIPE,
        stderr: Any = _PIPE,
        timeout: int | None = None,
        workdir: str | None = None,
        env: dict[str, str | None] | None = None,
        secrets: Any = None,
        text: bool = True,
        bufsize: int = -1,
        pty: bool = False,
        _pty_info: Any = None,
        pty_info: Any = None,
    ) -> ContainerProcess:
        _call("Sandbox.exec", sandbox_id=self._object_id, args=list(args), pty=pty)
        with _state() as state:
            if self._record(state)["finished"]:
                raise NotFoundError(f"Sandbox {self._object_id} has already finished")
        proc = subprocess.Popen(
            list(args),
            cwd=self._fs(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **{k: v for k, v in (env or {}).items() if v is not None}},
        )
        return ContainerProcess(proc, text)


# --- ContainerProcess and its streams ------------------------------------------------------


class _StreamReader:
    def __init__(self, pipe: Any, text: bool) -> None:
        self._pipe = pipe
        self._text = text

    def __iter__(self) -> Iterator[Any]:
        for chunk in iter(lambda: self._pipe.read1(65536), b""):
            yield chunk.decode() if self._text else chunk

    def read(self) -> Any:
        data = self._pipe.read()
        return data.decode() if self._text else data


class _StreamWriter:
    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._buffer = b""

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        self._buffer += data.encode() if isinstance(data, str) else bytes(data)

    def write_eof(self) -> None:
        self.drain()
        self._pipe.close()

    def drain(self) -> None:
        if self._buffer and not self._pipe.closed:
            try:
                self._pipe.write(self._buffer)
                self._pipe.flush()
            except BrokenPipeError:
                pass
        self._buffer = b""


class ContainerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], text: bool) -> None:
        self._proc = proc
        self._stdout = _StreamReader(proc.stdout, text)
        self._stderr = _StreamReader(proc.stderr, text)
        self._stdin = _StreamWriter(proc.stdin)
        self._returncode: int | None = None

    @property
    def stdout(self) -> _StreamReader:
        return self._stdout

    @property
    def stderr(self) -> _StreamReader:
        return self._stderr

    @property
    def stdin(self) -> _StreamWriter:
        return self._stdin

    @property
    def returncode(self) -> int:
        if self._returncode is None:
            raise InvalidError("You must call wait() before accessing the returncode.")
        return self._returncode

    def poll(self) -> int | None:
        self._returncode = self._proc.poll()
        return self._returncode

    def wait(self) -> int:
        self._returncode = self._proc.wait()
        return self._returncode


# --- Volume ---------------------------------------------------------------------------------


class FileEntry:
    def __init__(self, path: str) -> None:
        self.path = path  # as the service gives it: relative to the volume's root
        self.type = 1  # FileEntryType.FILE


class _VolumeUpload:
    def __init__(self, volume: Volume, force: bool) -> None:
        self._volume = volume
        self._force = force
        self._files: dict[str, str] = {}

    def __enter__(self) -> _VolumeUpload:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            return
        with self._volume._files("batch_upload") as files:
            for path in self._files:
                if path in files and not self._force:
                    raise FileExistsError(f"{path}: already exists")
            files.update(self._files)

    def put_file(self, local_file: Any, remote_path: str, mode: int | None = None) -> None:
        data = local_file.read() if hasattr(local_file, "read") else Path(local_file).read_bytes()
        self._files[remote_path.lstrip("/")] = data.decode()


class Volume:
    """A named volume; like the SDK's, it is resolved lazily on first use. Files are text."""

    def __init__(self, name: str, environment_name: str | None, create: bool) -> None:
        self._key = f"{_env(environment_name)}/{name}"
        self._name = name
        self._create = create

    @staticmethod
    def from_name(
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        version: Any = None,
        create_options: Any = None,
        client: Any = None,
    ) -> Volume:
        return Volume(name, environment_name, create_if_missing)

    @contextlib.contextmanager
    def _files(self, op: str) -> Iterator[dict[str, str]]:
        _call(f"Volume.{op}", name=self._name)
        with _state() as state:
            if self._key not in state["volumes"]:
                if not self._create:
                    raise NotFoundError(f"Volume '{self._name}' not found")
                state["volumes"][self._key] = {}
            yield state["volumes"][self._key]

    def listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        prefix = path.strip("/")
        with self._files("listdir") as files:
            found = [p for p in files if not prefix or p.startswith(prefix + "/")]
        return [FileEntry(p) for p in sorted(found) if recursive or "/" not in p[len(prefix) :]]

    def read_file(self, path: str) -> Iterator[bytes]:
        with self._files("read_file") as files:
            if path.lstrip("/") not in files:
                raise FileNotFoundError(f"{path}: No such file")
            data = files[path.lstrip("/")].encode()
        return iter([data])

    def remove_file(self, path: str, recursive: bool = False) -> None:
        with self._files("remove_file") as files:
            if path.lstrip("/") not in files:
                raise FileNotFoundError(f"{path}: No such file")
            del files[path.lstrip("/")]

    @contextlib.contextmanager
    def batch_upload(self, force: bool = False) -> Iterator[_VolumeUpload]:
        upload = _VolumeUpload(self, force)
        with upload:
            yield upload


class _DictManager:
    def delete(
        self,
        name: str,
        *,
        allow_missing: bool = False,
        environment_name: str | None = None,
        client: Any = None,
    ) -> None:
        if not allow_missing:
            raise NotFoundError(f"Dict '{name}' not found")


class Dict:
    """Where an older mngr kept its records. The double holds none (the move of such records
    into the volume is tested against the stand-in of Modal's API)."""

    objects = _DictManager()

    def __init__(self, name: str) -> None:
        self._name = name

    @staticmethod
    def from_name(
        name: str,
        *,
        environment_name: str | None = None,
        create_if_missing: bool = False,
        client: Any = None,
    ) -> Dict:
        return Dict(name)

    def items(self) -> Iterator[tuple[Any, Any]]:
        raise NotFoundError(f"Dict '{self._name}' not found")
