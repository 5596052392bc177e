"""The Modal shim: mngr's vendor program for Modal, and the only place `import modal` happens.

    <python> -m mngr_backends.modal_shim VERB --app APP --dict DICT --provider P [options]

The `modal` CLI cannot create, tag or snapshot sandboxes, so mngr talks to this small program
exactly as it talks to `docker` or `aws`: argv in, one JSON document on stdout, and on failure
one JSON object `{"kind", "message", "fix"}` on stderr with a non-zero exit (kind is one of
unauthorised, not-found, conflict, unreachable, vendor-missing, error). Credentials come from
the environment only (MODAL_TOKEN_ID / MODAL_TOKEN_SECRET / MODAL_PROFILE), never argv.

Provider-side state (no local database): a running host is a sandbox carrying `mngr-*` tags;
a stopped host and every snapshot is a JSON record in the named `modal.Dict` DICT, under
`host:<host-id>` and `snap:<snapshot-id>`. Modal sandboxes cannot be stopped, so `stop` is
snapshot_filesystem + terminate (the record kept) and `start` is a new sandbox from the
host's latest snapshot image. `exec` passes stdio and the exit code of the command through.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

TAG = "mngr-"
HOST_ID, HOST_NAME, PROVIDER, CREATED_AT = (
    "mngr-host-id",
    "mngr-host-name",
    "mngr-provider",
    "mngr-created-at",
)
IMAGE = "mngr-image"
# How the sandbox was asked for, kept as tags so `start` can ask for the same again.
SPEC_TAGS = {
    "cpu": "mngr-cpus",
    "memory": "mngr-memory-mib",
    "gpu": "mngr-gpu",
    "timeout": "mngr-timeout",
    "region": "mngr-region",
}
# Keeps a host's sandbox alive until it is terminated (or reaches its Modal timeout).
KEEP_ALIVE = ("sh", "-c", "while true; do sleep 3600; done")
DETACHED_LOG = "/tmp/mngr-detached.log"

EXIT_CODES = {"not-found": 3, "vendor-missing": 4, "unauthorised": 5}
FIXES = {
    "unauthorised": "run `modal token new` (or set token_id_env / token_secret_env in the "
    "provider's settings to env vars holding a Modal token)",
    "vendor-missing": "install mngr[modal] into that interpreter (pip install 'mngr[modal]') "
    'or set python = "/path/to/python" in the provider\'s settings',
}


class ShimError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --- talking to Modal ----------------------------------------------------------------------


class Session:
    """One provider's view of Modal: its app, its record dict, its tags."""

    def __init__(self, modal: Any, args: argparse.Namespace) -> None:
        self.modal = modal
        self.app_name: str = args.app
        self.dict_name: str = args.dict
        self.provider: str = args.provider
        self.environment: str | None = args.environment or None

    def app(self, *, create: bool) -> Any | None:
        try:
            return self.modal.App.lookup(
                self.app_name, create_if_missing=create, environment_name=self.environment
            )
        except Exception as exc:
            if not create and _kind_of(exc) == "not-found":
                return None  # no app yet: nothing was ever created
            raise

    def records(self, *, create: bool = True) -> Any:
        return self.modal.Dict.from_name(
            self.dict_name, environment_name=self.environment, create_if_missing=create
        )

    def all_records(self) -> dict[str, dict[str, Any]]:
        try:
            items = list(self.records(create=False).items())
        except Exception as exc:
            if _kind_of(exc) == "not-found":
                return {}  # no dict yet: nothing was ever stopped or snapshotted
            raise
        found = {}
        for key, value in items:
            try:
                record = json.loads(value)
            except (TypeError, ValueError):
                continue  # not ours
            if isinstance(record, dict) and record.get("provider") == self.provider:
                found[str(key)] = record
        return found

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.records().put(key, json.dumps({**record, "provider": self.provider}))

    def pop(self, key: str) -> dict[str, Any] | None:
        value = self.records().pop(key, None)
        return json.loads(value) if value else None

    def get(self, key: str) -> dict[str, Any] | None:
        value = self.records().get(key)
        if not value:
            return None
        record = json.loads(value)
        return record if record.get("provider") == self.provider else None

    def sandboxes(self, **tags: str) -> list[Any]:
        app = self.app(create=False)
        if app is None:
            return []
        wanted = {PROVIDER: self.provider, **tags}
        return list(self.modal.Sandbox.list(app_id=app.app_id, tags=wanted))

    def sandbox(self, sandbox_id: str, host_id: str) -> tuple[Any, dict[str, str]]:
        """A running sandbox of this provider, with its tags; not-found otherwise."""
        sandbox = self.modal.Sandbox.from_id(sandbox_id)
        tags = sandbox.get_tags()
        if tags.get(HOST_ID) != host_id or tags.get(PROVIDER) != self.provider:
            raise ShimError("not-found", f"sandbox {sandbox_id} is not host {host_id}")
        if sandbox.poll() is not None:
            raise ShimError("not-found", f"sandbox {sandbox_id} of host {host_id} has finished")
        return sandbox, tags

    def image(self, ref: str | None) -> Any:
        if ref and ref.startswith("im-"):
            return self.modal.Image.from_id(ref)
        if ref:
            return self.modal.Image.from_registry(ref)
        return self.modal.Image.debian_slim()

    def create_sandbox(self, name: str, image: Any, tags: dict[str, str], spec: dict) -> Any:
        kwargs = {k: v for k, v in spec.items() if v is not None}
        sandbox = self.modal.Sandbox.create(
            *KEEP_ALIVE, app=self.app(create=True), name=name, image=image, **kwargs
        )
        try:
            sandbox.set_tags(tags)
        except BaseException:
            sandbox.terminate()  # an untagged sandbox would be invisible to mngr
            raise
        return sandbox


# --- records <-> JSON ----------------------------------------------------------------------


def _spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    region = args.region.split(",") if args.region and "," in args.region else args.region
    return {
        "cpu": args.cpus,
        "memory": args.memory_mib,
        "gpu": args.gpu,
        "timeout": args.timeout,
        "region": region,
    }


def _spec_tags(spec: dict[str, Any]) -> dict[str, str]:
    tags = {}
    for key, tag in SPEC_TAGS.items():
        value = spec.get(key)
        if value is not None:
            tags[tag] = ",".join(value) if isinstance(value, list) else _plain(value)
    return tags


def _spec_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for key, tag in SPEC_TAGS.items():
        text = tags.get(tag)
        if not text:
            continue
        if key == "cpu":
            spec[key] = float(text)
        elif key in ("memory", "timeout"):
            spec[key] = int(text)
        elif key == "region" and "," in text:
            spec[key] = text.split(",")
        else:
            spec[key] = text
    return spec


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _resources(spec: dict[str, Any]) -> dict[str, Any]:
    memory = spec.get("memory")
    return {
        "cpus": spec.get("cpu"),
        "memory_gb": round(memory / 1024, 3) if memory else None,
        "gpus": spec.get("gpu"),
    }


def _user_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith(TAG)}


def _host_from_tags(sandbox_id: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "id": tags[HOST_ID],
        "name": tags[HOST_NAME],
        "state": "running",
        "image": tags.get(IMAGE),
        "created_at": tags.get(CREATED_AT),
        "tags": _user_tags(tags),
        "resources": _resources(_spec_from_tags(tags)),
        "sandbox_id": sandbox_id,
        "snapshots": [],
    }


def _host_from_record(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "name": record["name"],
        "state": "stopped",
        "image": record.get("image"),
        "created_at": record.get("created_at"),
        "tags": record.get("tags", {}),
        "resources": _resources(record.get("spec", {})),
        "sandbox_id": None,
        "snapshots": [],
    }


def _snapshot(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "host", "host_id", "created_at", "image_id")
    return {key: record.get(key) for key in keys}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- verbs ---------------------------------------------------------------------------------


def verb_check(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    app = s.app(create=True)
    return {"app": s.app_name, "app_id": app.app_id, "environment": s.environment or "default"}


def verb_list(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    sandboxes = s.sandboxes()
    with ThreadPoolExecutor(max_workers=16) as pool:  # one tag look-up per sandbox, at once
        tagged = list(pool.map(lambda sb: (sb.object_id, sb.get_tags()), sandboxes))
    hosts = {}
    for sandbox_id, tags in tagged:
        if HOST_ID in tags and HOST_NAME in tags:
            hosts[tags[HOST_ID]] = _host_from_tags(sandbox_id, tags)
    records = s.all_records()
    snapshots = [_snapshot(r) for k, r in records.items() if k.startswith("snap:")]
    for key, record in records.items():
        # A host both running and recorded as stopped is mid-start (or mid-stop): it runs.
        if key.startswith("host:") and record["id"] not in hosts:
            hosts[record["id"]] = _host_from_record(record)
    for snap in sorted(snapshots, key=lambda r: r.get("created_at") or ""):
        if snap["host_id"] in hosts:
            hosts[snap["host_id"]]["snapshots"].append(snap["id"])
    return {"hosts": list(hosts.values()), "snapshots": snapshots}


def verb_create(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    for key, record in s.all_records().items():
        if key.startswith("host:") and record.get("name") == args.name:
            raise ShimError("conflict", f"host {args.name!r} already exists (stopped)")
    image_label = args.image or "debian_slim"
    if args.from_snapshot:
        snap = s.get(f"snap:{args.from_snapshot}")
        if snap is None:
            raise ShimError("not-found", f"no snapshot {args.from_snapshot}")
        image = s.image(snap["image_id"])
        image_label = f"snapshot:{snap['name']}"
    else:
        image = s.image(args.image)
    spec = _spec_from_args(args)
    tags = {
        **dict(_pair(t) for t in args.tag),
        HOST_ID: args.host_id,
        HOST_NAME: args.name,
        PROVIDER: s.provider,
        CREATED_AT: args.created_at,
        IMAGE: image_label,
        **_spec_tags(spec),
    }
    sandbox = s.create_sandbox(args.name, image, tags, spec)
    return _host_from_tags(sandbox.object_id, tags)


def verb_terminate(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    terminated = []
    for sandbox in s.sandboxes(**{HOST_ID: args.host_id}):
        sandbox.terminate()
        terminated.append(sandbox.object_id)
    forgotten = s.pop(f"host:{args.host_id}") is not None
    purged = []
    if args.purge:
        for key, record in s.all_records().items():
            if key.startswith("snap:") and record.get("host_id") == args.host_id:
                s.pop(key)
                purged.append(record["id"])
    return {"terminated": terminated, "forgot_record": forgotten, "deleted_snapshots": purged}


def _take_snapshot(
    s: Session, sandbox: Any, tags: dict[str, str], args: argparse.Namespace, name: str
) -> dict[str, Any]:
    image = sandbox.snapshot_filesystem(timeout=args.snapshot_timeout)
    record = {
        "id": args.snapshot_id,
        "name": name,
        "host": tags[HOST_NAME],
        "host_id": tags[HOST_ID],
        "created_at": args.created_at,
        "image_id": image.object_id,
    }
    s.put(f"snap:{args.snapshot_id}", record)
    return record


def verb_snapshot(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    sandbox, tags = s.sandbox(args.sandbox_id, args.host_id)
    return _snapshot(_take_snapshot(s, sandbox, tags, args, args.name))


def verb_list_snapshots(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    snaps = [
        _snapshot(r)
        for k, r in s.all_records().items()
        if k.startswith("snap:") and (not args.host_id or r.get("host_id") == args.host_id)
    ]
    return {"snapshots": sorted(snaps, key=lambda r: r.get("created_at") or "")}


def verb_delete_snapshot(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    # Modal has no call to delete an image: the record goes, the image expires by its TTL.
    return {"deleted": s.pop(f"snap:{args.snapshot_id}") is not None}


def verb_stop(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    sandbox, tags = s.sandbox(args.sandbox_id, args.host_id)
    snap = _take_snapshot(s, sandbox, tags, args, args.name)
    record = {
        "id": tags[HOST_ID],
        "name": tags[HOST_NAME],
        "created_at": tags.get(CREATED_AT),
        "image": tags.get(IMAGE),
        "tags": _user_tags(tags),
        "spec": _spec_from_tags(tags),
        "stopped_at": _now(),
        "snapshot_id": snap["id"],
        "image_id": snap["image_id"],
    }
    s.put(f"host:{record['id']}", record)  # written before terminate: never lost in between
    sandbox.terminate()
    return _host_from_record(record)


def verb_start(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    record = s.get(f"host:{args.host_id}")
    if record is None:
        raise ShimError("not-found", f"no stopped host {args.host_id}")
    snaps = [
        r
        for k, r in s.all_records().items()
        if k.startswith("snap:") and r.get("host_id") == args.host_id
    ]
    latest = max(snaps, key=lambda r: r.get("created_at") or "", default=None)
    image_id = latest["image_id"] if latest else record["image_id"]
    spec = record.get("spec", {})
    tags = {
        **record.get("tags", {}),
        HOST_ID: record["id"],
        HOST_NAME: record["name"],
        PROVIDER: s.provider,
        CREATED_AT: record.get("created_at") or _now(),
        **({IMAGE: record["image"]} if record.get("image") else {}),
        **_spec_tags(spec),
    }
    sandbox = s.create_sandbox(record["name"], s.image(image_id), tags, spec)
    s.pop(f"host:{args.host_id}")
    return _host_from_tags(sandbox.object_id, tags)


def verb_exec(s: Session, args: argparse.Namespace) -> int:
    """Run a command in the sandbox with stdio passed through; returns its exit code."""
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise ShimError("error", "no command given")
    sandbox = s.modal.Sandbox.from_id(args.sandbox_id)
    if args.detach:
        argv = ["sh", "-c", f'nohup "$@" >>{DETACHED_LOG} 2>&1 </dev/null &', "sh", *argv]
    # A pty's output is raw terminal bytes, not text (as `modal shell` runs it).
    process = sandbox.exec(*argv, text=False, **({"pty": True} if args.tty else {}))
    if args.tty and hasattr(process, "attach"):
        process.attach()  # raw terminal both ways, as `modal shell` does
        return process.wait()
    pumps = [
        threading.Thread(target=_pump_out, args=(process.stdout, sys.stdout.buffer)),
        threading.Thread(target=_pump_out, args=(process.stderr, sys.stderr.buffer)),
    ]
    for pump in pumps:
        pump.start()
    if not args.detach:
        threading.Thread(target=_pump_in, args=(process.stdin,), daemon=True).start()
    code = process.wait()
    for pump in pumps:
        pump.join()
    return code


def _pump_out(stream: Iterator[bytes], target: Any) -> None:
    for chunk in stream:
        target.write(chunk if isinstance(chunk, bytes) else chunk.encode())
        target.flush()


def _pump_in(writer: Any) -> None:
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            writer.write_eof()
            writer.drain()
            return
        writer.write(chunk)
        writer.drain()


def _pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


VERBS: dict[str, Callable[[Session, argparse.Namespace], Any]] = {
    "check": verb_check,
    "list": verb_list,
    "create": verb_create,
    "terminate": verb_terminate,
    "destroy": verb_terminate,
    "snapshot": verb_snapshot,
    "list-snapshots": verb_list_snapshots,
    "delete-snapshot": verb_delete_snapshot,
    "stop": verb_stop,
    "start": verb_start,
    "exec": verb_exec,
}


# --- argv ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # a usage error is reported like any other
        raise ShimError("error", f"modal shim: {message}")


def parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--app", required=True)
    common.add_argument("--dict", required=True)
    common.add_argument("--provider", required=True)
    common.add_argument("--environment")
    root = _Parser(prog="python -m mngr_backends.modal_shim")
    verbs = root.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    sub = {name: verbs.add_parser(name, parents=[common]) for name in VERBS}
    for name in ("create",):
        p = sub[name]
        p.add_argument("--name", required=True)
        p.add_argument("--host-id", required=True)
        p.add_argument("--created-at", required=True)
        p.add_argument("--image")
        p.add_argument("--from-snapshot")
        p.add_argument("--cpus", type=float)
        p.add_argument("--memory-mib", type=int)
        p.add_argument("--gpu")
        p.add_argument("--timeout", type=int)
        p.add_argument("--region")
        p.add_argument("--tag", action="append", default=[])
    for name in ("terminate", "destroy"):
        sub[name].add_argument("--host-id", required=True)
        sub[name].add_argument("--purge", action="store_true")
    for name in ("snapshot", "stop"):
        p = sub[name]
        p.add_argument("--sandbox-id", required=True)
        p.add_argument("--host-id", required=True)
        p.add_argument("--snapshot-id", required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--created-at", required=True)
        p.add_argument("--snapshot-timeout", type=int, default=55)
    sub["list-snapshots"].add_argument("--host-id")
    sub["delete-snapshot"].add_argument("--snapshot-id", required=True)
    sub["start"].add_argument("--host-id", required=True)
    sub["exec"].add_argument("--sandbox-id", required=True)
    sub["exec"].add_argument("--tty", action="store_true")
    sub["exec"].add_argument("--detach", action="store_true")
    sub["exec"].add_argument("argv", nargs=argparse.REMAINDER)
    return root


# --- errors --------------------------------------------------------------------------------


def _kind_of(exc: BaseException) -> str:
    """Classify an SDK exception by its class names (stable across SDK versions)."""
    if isinstance(exc, ShimError):
        return exc.kind
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"AuthError", "PermissionDeniedError"}:
        return "unauthorised"
    if "NotFoundError" in names:
        return "not-found"
    if "AlreadyExistsError" in names:
        return "conflict"
    if names & {"ConnectionError", "ServiceError", "TimeoutError", "OSError"}:
        return "unreachable"
    if "GRPCError" in names:  # older SDKs let grpclib errors through
        status = str(getattr(exc, "_grpc_status", getattr(exc, "status", "")))
        for word, kind in (
            ("UNAUTHENTICATED", "unauthorised"),
            ("PERMISSION_DENIED", "unauthorised"),
            ("NOT_FOUND", "not-found"),
            ("ALREADY_EXISTS", "conflict"),
            ("UNAVAILABLE", "unreachable"),
            ("DEADLINE_EXCEEDED", "unreachable"),
        ):
            if word in status:
                return kind
    return "error"


def _message_of(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:1000]


def _fail(kind: str, message: str, *, human: bool) -> int:
    fix = FIXES.get(kind, "")
    if human:  # exec: stderr is the user's terminal
        sys.stderr.write(f"error: {message}" + (f"; fix: {fix}" if fix else "") + "\n")
    else:
        sys.stderr.write(json.dumps({"kind": kind, "message": message, "fix": fix}) + "\n")
    return EXIT_CODES.get(kind, 1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    human = bool(argv) and argv[0] == "exec"
    result_out = sys.stdout
    if not human:
        sys.stdout = sys.stderr  # whatever the SDK prints must not corrupt our JSON
    try:
        args = parser().parse_args(argv)
        try:
            import modal
        except ImportError as exc:
            raise ShimError(
                "vendor-missing",
                f"the Modal SDK (package 'modal') cannot be imported by {sys.executable}: {exc}",
            ) from None
        result = VERBS[args.verb](Session(modal, args), args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one JSON error
        return _fail(_kind_of(exc), _message_of(exc), human=human)
    if human:
        return int(result)
    result_out.write(json.dumps(result) + "\n")
    result_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
