"""The Modal shim: mngr's vendor program for Modal, and the only place `import modal` happens.

    <python> -m mngr_backends.modal_shim VERB --app APP --volume VOLUME --provider P [options]

The `modal` CLI cannot create, tag or snapshot sandboxes, so mngr talks to this small program
exactly as it talks to `docker` or `aws`: argv in, one JSON document on stdout, and on failure
one JSON object `{"kind", "message", "fix"}` on stderr with a non-zero exit (kind is one of
unauthorised, not-found, conflict, unreachable, vendor-missing, error). Credentials come from
the environment only (MODAL_TOKEN_ID / MODAL_TOKEN_SECRET / MODAL_PROFILE), never argv.

Provider-side state (no local database): a running host is a sandbox carrying `mngr-*` tags;
a stopped host and every snapshot is a JSON file in the named `modal.Volume` VOLUME,
`host/<host-id>.json` and `snap/<snapshot-id>.json` (a Volume keeps its files until they are
removed; a Dict entry would expire after 7 days unread: records an older mngr kept in a Dict
of that name are moved into the volume once), and a snapshot's image is made with no expiry
(`ttl=None`) and deleted with its record. Modal sandboxes cannot be stopped, so `stop` is
snapshot_filesystem + terminate (the record kept) and `start` is a new sandbox from the
host's latest snapshot image. `exec` passes stdio and the exit code of the command through.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import re
import socket
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

TAG = "mngr-"
HOST_ID, HOST_NAME, PROVIDER, CREATED_AT, IMAGE = (
    "mngr-host-id",
    "mngr-host-name",
    "mngr-provider",
    "mngr-created-at",
    "mngr-image",
)


def _region(text: str) -> str | list[str]:
    return text.split(",") if "," in text else text


# Modal's tag rule (the SDK checks App tags against it; sandbox tags are held to it here too).
TAG_MAX = 63
_PLAIN = re.compile(r"[A-Za-z0-9_-]")
_ESCAPE = re.compile(rb"\.([0-9a-f]{2})")
_CONTINUED = re.compile(r"^mngr-[a-z-]+\.[0-9]+$")


# How the sandbox was asked for (Sandbox.create keyword: tag, type), kept as tags so `start`
# can ask for the same again.
SPEC_TAGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "cpu": ("mngr-cpus", float),
    "memory": ("mngr-memory-mib", int),
    "gpu": ("mngr-gpu", str),
    "timeout": ("mngr-timeout", int),
    "region": ("mngr-region", _region),
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
# SDK exceptions by class name (modal.exception maps each gRPC status to one class; their
# grpclib `status` attribute is deprecated and warns on stderr, so it is never read): the first
# that matches gives the kind. FAILED_PRECONDITION and ABORTED come back as ConflictError.
SDK_ERRORS = [
    ({"AuthError", "PermissionDeniedError"}, "unauthorised"),
    ({"NotFoundError"}, "not-found"),
    ({"AlreadyExistsError", "ConflictError"}, "conflict"),
    ({"ConnectionError", "ServiceError", "TimeoutError", "OSError"}, "unreachable"),
]
# How long the server may take to answer the reachability probe (the SDK itself retries for
# about a minute before it gives up on an unreachable server).
REACH_S = 5.0
# An HTTP/2 client preface and an empty SETTINGS frame: any gRPC server answers them at once.
H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


class ShimError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --- talking to Modal ----------------------------------------------------------------------


class Session:
    """One provider's view of Modal: its app, its record volume, its tags."""

    def __init__(self, modal: Any, args: argparse.Namespace) -> None:
        self.modal = modal
        self.app_name: str = args.app
        self.volume_name: str = args.volume
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

    def store(self, *, create: bool = True) -> Any:
        return self.modal.Volume.from_name(
            self.volume_name, environment_name=self.environment, create_if_missing=create
        )

    def all_records(self) -> dict[str, dict[str, Any]]:
        store = self.store(create=False)
        try:
            entries = store.listdir("/", recursive=True)
        except Exception as exc:
            if _kind_of(exc) == "not-found":
                return self._migrate()  # no volume yet: nothing recorded, unless in a Dict
            raise
        keys = [_key(entry.path) for entry in entries if entry.path.endswith(".json")]
        with ThreadPoolExecutor(max_workers=16) as pool:  # one read per record, at once
            records = pool.map(lambda key: self._read(store, key), keys)
        return {key: record for key, record in zip(keys, records, strict=True) if record}

    def _migrate(self) -> dict[str, dict[str, Any]]:
        """Move the records an older mngr kept in a modal.Dict (of the volume's name; its
        entries expire after 7 days unread) into the volume once, then delete the Dict."""
        try:
            legacy = self.modal.Dict.from_name(self.volume_name, environment_name=self.environment)
            items = list(legacy.items())
        except Exception as exc:
            if _kind_of(exc) == "not-found":
                return {}  # nothing was ever stopped or snapshotted
            raise
        records = {}
        for key, value in items:
            try:
                record = json.loads(value)
            except (TypeError, ValueError):
                continue  # not ours
            if isinstance(record, dict) and str(key).startswith(("host:", "snap:")):
                records[str(key)] = record
        if records:  # every provider's (each keeps its name in the record), as the Dict held
            self._write(records)
        self.modal.Dict.objects.delete(
            self.volume_name, allow_missing=True, environment_name=self.environment
        )
        return {k: r for k, r in records.items() if r.get("provider") == self.provider}

    def _read(self, store: Any, key: str) -> dict[str, Any] | None:
        try:
            record = json.loads(b"".join(store.read_file(_path(key))))
        except FileNotFoundError:
            return None  # removed since it was listed
        except ValueError:
            return None  # not ours
        return (
            record if isinstance(record, dict) and record.get("provider") == self.provider else None
        )

    def put(self, key: str, record: dict[str, Any]) -> None:
        self._write({key: {**record, "provider": self.provider}})

    def _write(self, records: dict[str, dict[str, Any]]) -> None:
        with self.store().batch_upload(force=True) as batch:
            for key, record in records.items():
                batch.put_file(io.BytesIO(json.dumps(record).encode()), _path(key))

    def pop(self, key: str) -> dict[str, Any] | None:
        store = self.store()
        record = self._read(store, key)
        if record is not None:
            try:
                store.remove_file(_path(key))
            except FileNotFoundError:
                pass  # removed meanwhile: the same outcome
        return record

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read(self.store(), key)

    def forget_snapshot(self, snapshot_id: str) -> bool:
        """Delete the snapshot's image (none expires by itself), unless a stopped host still
        starts from it, then its record."""
        records = self.all_records()
        snap = records.get(f"snap:{snapshot_id}")
        if snap is None:
            return False
        if not _of(records, "host", image_id=snap["image_id"]):
            try:  # Modal's only call that deletes an image (experimental in SDK 1.x)
                importlib.import_module("modal.experimental").image_delete(snap["image_id"])
            except Exception as exc:
                if _kind_of(exc) != "not-found":
                    raise
        self.pop(f"snap:{snapshot_id}")
        return True

    def sandboxes(self, **tags: str) -> list[Any]:
        app = self.app(create=False)
        if app is None:
            return []
        wanted = encode_tags({PROVIDER: self.provider, **tags})
        return list(self.modal.Sandbox.list(app_id=app.app_id, tags=wanted))

    def sandbox(self, sandbox_id: str, host_id: str) -> tuple[Any, dict[str, str]]:
        """A running sandbox of this provider, with its tags; not-found otherwise."""
        sandbox = self.modal.Sandbox.from_id(sandbox_id)
        tags = decode_tags(sandbox.get_tags())
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

    def launch(self, record: dict[str, Any], image: Any) -> dict[str, Any]:
        """A new sandbox for the host `record` describes, tagged so that `list` finds it."""
        spec = {k: v for k, v in record.get("spec", {}).items() if v is not None}
        tags = _tags(self.provider, record)
        # Tagged at birth: a sandbox that exists is never untagged, so never invisible to mngr.
        sandbox = self.modal.Sandbox.create(
            *KEEP_ALIVE,
            app=self.app(create=True),
            name=record["name"],
            tags=encode_tags(tags),
            image=image,
            **spec,
        )
        return _host(_record(tags), sandbox.object_id)


# --- records <-> tags <-> JSON -------------------------------------------------------------


def _path(key: str) -> str:
    """Where the record `host:<id>` lives in the volume: `/host/<id>.json`."""
    return "/" + key.replace(":", "/", 1) + ".json"


def _key(path: str) -> str:
    return path.strip("/").removesuffix(".json").replace("/", ":", 1)


def _record(tags: dict[str, str]) -> dict[str, Any]:
    """A host as its sandbox's tags describe it (what a stopped host keeps in its record)."""
    return {
        "id": tags[HOST_ID],
        "name": tags[HOST_NAME],
        "created_at": tags.get(CREATED_AT),
        "image": tags.get(IMAGE),
        "tags": {k: v for k, v in tags.items() if not k.startswith(TAG)},
        "spec": {k: parse(tags[t]) for k, (t, parse) in SPEC_TAGS.items() if tags.get(t)},
    }


def _tags(provider: str, record: dict[str, Any]) -> dict[str, str]:
    """The sandbox tags that describe the host `record` describes (`_record` reversed)."""
    spec = record.get("spec", {})
    tags = {
        **record.get("tags", {}),
        HOST_ID: record["id"],
        HOST_NAME: record["name"],
        PROVIDER: provider,
        CREATED_AT: record.get("created_at") or _now(),
        IMAGE: record.get("image"),
        **{t: _tag_value(spec.get(k)) for k, (t, _) in SPEC_TAGS.items()},
    }
    return {k: v for k, v in tags.items() if v is not None}


def encode_tag_value(value: str) -> str:
    """`value` under Modal's tag rule `^[A-Za-z0-9._-]{1,63}$` (length aside), reversibly:
    letters, digits, '_' and '-' stay, any other character becomes '.xx' per UTF-8 byte
    (so '.' is '.2e'); the empty value is '.'."""
    if not value:
        return "."
    return "".join(
        c if _PLAIN.fullmatch(c) else "".join(f".{b:02x}" for b in c.encode()) for c in value
    )


def decode_tag_value(text: str) -> str:
    if text == ".":
        return ""
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), text.encode())
    return raw.decode(errors="replace")


def encode_tags(tags: dict[str, str]) -> dict[str, str]:
    """Tags as Modal holds them. mngr's own values (a long image name) continue under
    KEY.1, KEY.2...; a user's value that does not fit is refused (mngr checks it first)."""
    out = {}
    for key, value in tags.items():
        text = encode_tag_value(value)
        if len(text) > TAG_MAX and not key.startswith(TAG):
            raise ShimError(
                "error",
                f"the value of tag {key!r} takes {len(text)} characters encoded for Modal, "
                f"which keeps at most {TAG_MAX}",
            )
        for n, start in enumerate(range(0, len(text), TAG_MAX)):
            out[f"{key}.{n}" if n else key] = text[start : start + TAG_MAX]
    return out


def decode_tags(tags: dict[str, str]) -> dict[str, str]:
    """`encode_tags` reversed."""
    out = {}
    for key, text in tags.items():
        if _CONTINUED.fullmatch(key):
            continue  # read with its first part
        n = 1
        while key.startswith(TAG) and f"{key}.{n}" in tags:
            text += tags[f"{key}.{n}"]
            n += 1
        out[key] = decode_tag_value(text)
    return out


def _tag_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _host(record: dict[str, Any], sandbox_id: str | None = None) -> dict[str, Any]:
    """A host as mngr reads it: running in a sandbox, or stopped (no sandbox)."""
    spec = record.get("spec", {})
    memory = spec.get("memory")
    return {
        "id": record["id"],
        "name": record["name"],
        "state": "running" if sandbox_id else "stopped",
        "image": record.get("image"),
        "created_at": record.get("created_at"),
        "tags": record.get("tags", {}),
        "resources": {
            "cpus": spec.get("cpu"),
            "memory_gb": round(memory / 1024, 3) if memory else None,
            "gpus": spec.get("gpu"),
        },
        "sandbox_id": sandbox_id,
        "snapshots": [],
    }


def _snapshot(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "host", "host_id", "created_at", "image_id")
    return {key: record.get(key) for key in keys}


def _of(records: dict[str, dict[str, Any]], kind: str, **match: Any) -> list[dict[str, Any]]:
    """The records of a kind ("host": stopped hosts, "snap": snapshots) whose fields match."""
    return [
        record
        for key, record in records.items()
        if key.startswith(f"{kind}:") and all(record.get(f) == v for f, v in match.items())
    ]


def _by_age(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: r.get("created_at") or "")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- verbs ---------------------------------------------------------------------------------


def verb_check(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    app = s.app(create=True)
    return {"app": s.app_name, "app_id": app.app_id, "environment": s.environment or "default"}


def verb_list(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    sandboxes = s.sandboxes()
    with ThreadPoolExecutor(max_workers=16) as pool:  # one tag look-up per sandbox, at once
        tagged = list(pool.map(lambda sb: (sb.object_id, decode_tags(sb.get_tags())), sandboxes))
    hosts = {
        tags[HOST_ID]: _host(_record(tags), sandbox_id)
        for sandbox_id, tags in tagged
        if HOST_ID in tags and HOST_NAME in tags
    }
    records = s.all_records()
    for record in _of(records, "host"):
        # A host both running and recorded as stopped is mid-start (or mid-stop): it runs.
        hosts.setdefault(record["id"], _host(record))
    snapshots = [_snapshot(r) for r in _of(records, "snap")]
    for snap in _by_age(snapshots):
        if snap["host_id"] in hosts:
            hosts[snap["host_id"]]["snapshots"].append(snap["id"])
    return {"hosts": list(hosts.values()), "snapshots": snapshots}


def verb_create(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    if _of(s.all_records(), "host", name=args.name):
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
    record = {
        "id": args.host_id,
        "name": args.name,
        "created_at": args.created_at,
        "image": image_label,
        "tags": dict(_pair(tag) for tag in args.tag),
        "spec": {key: getattr(args, key) for key in SPEC_TAGS},
    }
    return s.launch(record, image)


def verb_terminate(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    terminated = []
    for sandbox in s.sandboxes(**{HOST_ID: args.host_id}):
        sandbox.terminate()
        terminated.append(sandbox.object_id)
    forgotten = s.pop(f"host:{args.host_id}") is not None
    return {"terminated": terminated, "forgot_record": forgotten}


def _take_snapshot(s: Session, args: argparse.Namespace) -> tuple[Any, dict[str, str], Any]:
    """Snapshot the host's sandbox and record it: (sandbox, its tags, the record)."""
    sandbox, tags = s.sandbox(args.sandbox_id, args.host_id)
    # No expiry (Modal's default is 30 days): a stopped host must be able to start years on.
    image = sandbox.snapshot_filesystem(timeout=args.snapshot_timeout, ttl=None)
    record = {
        "id": args.snapshot_id,
        "name": args.name,
        "host": tags[HOST_NAME],
        "host_id": tags[HOST_ID],
        "created_at": args.created_at,
        "image_id": image.object_id,
    }
    s.put(f"snap:{args.snapshot_id}", record)
    return sandbox, tags, record


def verb_snapshot(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    return _snapshot(_take_snapshot(s, args)[2])


def verb_list_snapshots(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    match = {"host_id": args.host_id} if args.host_id else {}
    return {"snapshots": [_snapshot(r) for r in _by_age(_of(s.all_records(), "snap", **match))]}


def verb_delete_snapshot(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    return {"deleted": s.forget_snapshot(args.snapshot_id)}


def verb_stop(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    sandbox, tags, snap = _take_snapshot(s, args)
    record = {
        **_record(tags),
        "stopped_at": _now(),
        "snapshot_id": snap["id"],
        "image_id": snap["image_id"],
    }
    s.put(f"host:{record['id']}", record)  # written before terminate: never lost in between
    sandbox.terminate()
    return _host(record)


def verb_start(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    record = s.get(f"host:{args.host_id}")
    if record is None:
        raise ShimError("not-found", f"no stopped host {args.host_id}")
    snaps = _by_age(_of(s.all_records(), "snap", host_id=args.host_id))
    host = s.launch(record, s.image(snaps[-1]["image_id"] if snaps else record["image_id"]))
    s.pop(f"host:{args.host_id}")
    return host


def verb_tag(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    """Set and remove user tags: on the sandbox of a running host, in the record of a stopped
    one."""

    def change(tags: dict[str, str]) -> dict[str, str]:
        changed = {**tags, **dict(_pair(tag) for tag in args.tag)}
        for key in args.remove:
            changed.pop(key, None)
        return changed

    if args.sandbox_id:
        sandbox, tags = s.sandbox(args.sandbox_id, args.host_id)
        record = _record(tags)
        record["tags"] = change(record["tags"])
        sandbox.set_tags(encode_tags(_tags(s.provider, record)))
        return _host(record, sandbox.object_id)
    record = s.get(f"host:{args.host_id}")
    if record is None:
        raise ShimError("not-found", f"no stopped host {args.host_id}")
    record["tags"] = change(record.get("tags", {}))
    s.put(f"host:{args.host_id}", record)
    return _host(record)


def verb_restore(s: Session, args: argparse.Namespace) -> dict[str, Any]:
    """A new sandbox for the host from a chosen snapshot. A sandbox name is unique in its app,
    so a running host's sandbox ends first, its record kept as a stopped host's: should the
    new sandbox fail, the host is stopped, not lost."""
    snap = s.get(f"snap:{args.snapshot_id}")
    if snap is None:
        raise ShimError("not-found", f"no snapshot {args.snapshot_id}")
    if args.sandbox_id:
        old, tags = s.sandbox(args.sandbox_id, args.host_id)
        record = {**_record(tags), "stopped_at": _now(), "image_id": snap["image_id"]}
        s.put(f"host:{record['id']}", record)
        old.terminate()
    record = s.get(f"host:{args.host_id}")
    if record is None:
        raise ShimError("not-found", f"no stopped host {args.host_id}")
    host = s.launch(record, s.image(snap["image_id"]))
    s.pop(f"host:{args.host_id}")
    return host


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
    "tag": verb_tag,
    "restore": verb_restore,
    "exec": verb_exec,
}


# --- argv ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # a usage error is reported like any other
        raise ShimError("error", f"modal shim: {message}")


def parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    for flag in ("--app", "--volume", "--provider"):
        common.add_argument(flag, required=True)
    common.add_argument("--environment")
    root = _Parser(prog="python -m mngr_backends.modal_shim")
    verbs = root.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    sub = {name: verbs.add_parser(name, parents=[common]) for name in VERBS}

    def add(names: str, *flags: str, **how: Any) -> None:
        for name in names.split():
            for flag in flags:
                sub[name].add_argument(flag, **how)

    add("create terminate destroy snapshot stop start tag restore", "--host-id", required=True)
    add("create snapshot stop", "--name", "--created-at", required=True)
    add("snapshot stop exec", "--sandbox-id", required=True)
    add("tag restore", "--sandbox-id")
    add("restore", "--snapshot-id", required=True)
    add("tag", "--tag", "--remove", action="append", default=[])
    add("snapshot stop delete-snapshot", "--snapshot-id", required=True)
    add("snapshot stop", "--snapshot-timeout", type=int, default=55)
    add("create", "--image", "--from-snapshot", "--gpu")
    add("create", "--cpus", dest="cpu", type=float)
    add("create", "--memory-mib", dest="memory", type=int)
    add("create", "--timeout", type=int)
    add("create", "--region", type=_region)
    add("create", "--tag", action="append", default=[])
    add("list-snapshots", "--host-id")
    add("exec", "--tty", "--detach", action="store_true")
    sub["exec"].add_argument("argv", nargs=argparse.REMAINDER)
    return root


# --- errors --------------------------------------------------------------------------------


def _kind_of(exc: BaseException) -> str:
    if isinstance(exc, ShimError):
        return exc.kind
    names = {cls.__name__ for cls in type(exc).__mro__}
    for classes, kind in SDK_ERRORS:
        if names & classes:
            return kind
    return "error"


def reach(server_urls: str, deadline_s: float = REACH_S) -> None:
    """Fail fast with "cannot reach Modal" unless a server of the SDK's (comma-separated) URLs
    answers an HTTP/2 hello within the deadline. Nothing but the hello is sent, so the TLS
    certificate is left to the SDK to check."""
    failures = []
    for url in filter(None, (u.strip() for u in server_urls.split(","))):
        parts = urllib.parse.urlsplit(url)
        tls = parts.scheme == "https"
        where = (parts.hostname or "", parts.port or (443 if tls else 80))
        try:
            with socket.create_connection(where, timeout=deadline_s) as raw:
                sock = raw
                if tls:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    context.set_alpn_protocols(["h2"])
                    sock = context.wrap_socket(raw, server_hostname=where[0])
                sock.sendall(H2_HELLO)
                if not sock.recv(1):
                    raise OSError("the connection was closed")
            return
        except OSError as exc:
            failures.append(f"{where[0]}:{where[1]}: {str(exc) or type(exc).__name__}")
    if failures:
        raise ShimError("unreachable", f"cannot reach Modal ({'; '.join(failures)})")


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
        reach(str(importlib.import_module("modal.config").config.get("server_url") or ""))
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
