"""Local backend: a host is a directory under the data dir, its record a file inside it.

Layout of one provider instance (default `$XDG_DATA_HOME/mngr/local/<provider>/`):

    <name>/                 the host: commands run here
    <name>/.mngr/host.json  the record (id, name, tags, state, created_at): the only state
    <name>/.mngr/pids/      process groups started by `host exec --detach`
    .snapshots/<id>.tar.gz  snapshots (outlive the host), with <id>.json beside them

A host's `address` is `{"path": <name>/}`; the handle is that directory too.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mngr import paths
from mngr.backend import (
    Backend,
    Capability,
    CreateOptions,
    CreateRequest,
    Listing,
    Orphan,
    ProviderConfig,
    shell_exec,
)
from mngr.errors import ConflictError, MngrError, NotFoundError, validation_message
from mngr.names import check_host_name, new_snapshot_id
from mngr.plan import Context, Plan, Step
from mngr.records import Host, HostState, Snapshot, changed_tags, utc_now
from mngr.runner import Command
from mngr.toolkit.vendor_json import HostFields, Lenient

META = ".mngr"
RECORD = "host.json"
SNAPSHOTS = ".snapshots"
RESTORING = ".restoring-"  # a snapshot being unpacked beside its host (`host start --snapshot`)
DETACH_ENV = "MNGR_DETACHED"  # marks the processes of one `exec --detach` (see _kill_groups)


class LocalConfig(ProviderConfig):
    root: str | None = None  # default: $XDG_DATA_HOME/mngr/local/<provider>


class LocalCreateOptions(CreateOptions):
    pass


class HostRecord(HostFields):
    """What <name>/.mngr/host.json says of its host (and `provider`, checked apart)."""


class SnapshotRecord(Lenient):
    """What .snapshots/<id>.json says of its snapshot."""

    id: str
    name: str
    host: str
    host_id: str | None = None
    created_at: str | None = None


class LocalBackend(Backend):
    name = "local"
    config_model = LocalConfig
    create_options_model = LocalCreateOptions
    unsupported = {
        Capability.IDLE_STOP: (
            "a local host is a folder on this machine with no process of its own; a watcher "
            "would be a daemon mngr leaves running here, which it does not do"
        ),
    }
    transfer_protected = (META,)
    on_this_machine = True

    config: LocalConfig

    @property
    def root(self) -> Path:
        return _root_of(self.config)

    @classmethod
    def shared_state_key(cls, config: ProviderConfig) -> str | None:
        assert isinstance(config, LocalConfig)
        return f"root {os.path.realpath(_root_of(config))}"

    def host_dir(self, name: str) -> Path:
        return self.root / check_host_name(name)

    # --- records ----------------------------------------------------------------------

    def _read(self, folder: Path) -> Host | None:
        """The host in `folder`, or None when it has no record (being created, or not ours)."""
        data = _load(folder / META / RECORD)
        return None if data is None else self._host(folder, data)

    def _host(self, folder: Path, data: Any) -> Host:
        """A record as this provider's host; a damaged one is one error naming its file."""
        try:
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("name") != folder.name:
                raise ValueError(f"its name {data.get('name')!r} is not the directory's")
            if data.get("provider", self.provider) != self.provider:  # older records have none
                raise ValueError(
                    f"it belongs to provider {data['provider']!r} (a root shared with it, or "
                    "a renamed provider); not listed, not touched"
                )
            record = HostRecord.model_validate(data)
        except ValidationError as exc:
            problem = validation_message(exc.errors()[0])
        except ValueError as exc:
            problem = str(exc)
        else:
            fields = record.model_dump()
            # The record lists every snapshot ever taken; a deleted one is not the host's now.
            kept = self.root / SNAPSHOTS
            fields["snapshots"] = [s for s in fields["snapshots"] if (kept / f"{s}.json").exists()]
            return Host(
                **fields,
                provider=self.provider,
                backend=self.name,
                address={"path": str(folder)},
                handle=str(folder),
            )
        raise MngrError(f"bad host record {folder / META / RECORD}: {problem}")

    def _write(self, folder: Path, host_id: str, *, new: bool = False, **changes: Any) -> None:
        self._update(folder, host_id, lambda data: data.update(changes), new=new)

    def _update(
        self,
        folder: Path,
        host_id: str,
        change: Callable[[dict[str, Any]], None],
        *,
        new: bool = False,
    ) -> None:
        """Read-modify-write of host `host_id`'s record, under its lock so that concurrent
        stop, start and snapshot of one host (several mngr processes) never lose each
        other's update, nor change a newer host that took the name meanwhile."""
        with self._locked(folder) as data:
            data = {} if new else self._expect(folder, host_id, data)
            change(data)
            _atomic_write(folder / META / RECORD, json.dumps(data, indent=2, ensure_ascii=False))

    @contextmanager
    def _locked(self, folder: Path) -> Iterator[dict[str, Any] | None]:
        """Hold the host's record lock; yield its record, or None when it has none (gone, or
        a create still running)."""
        record = folder / META / RECORD
        try:
            lock = os.open(folder / META / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        except (FileNotFoundError, NotADirectoryError):  # destroyed: never leave a stub behind
            yield None
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield _load(record)
        finally:
            os.close(lock)

    def _expect(self, folder: Path, host_id: str, data: dict[str, Any] | None) -> dict[str, Any]:
        """The record, if it is still host `host_id`'s: the name may have been destroyed and
        given to a new host since this command looked it up."""
        if data is None:
            raise NotFoundError(f"host {folder.name!r} no longer exists ({folder / META / RECORD})")
        if not isinstance(data, dict) or data.get("id") != host_id:
            now = data.get("id") if isinstance(data, dict) else None
            raise ConflictError(
                f"host {folder.name!r} changed since this command looked it up: it is now "
                f"{now}, not {host_id}; nothing done"
            )
        return data

    def _retire(self, folder: Path, host_id: str, made: tuple[int, int] | None = None) -> None:
        """Remove the directory of host `host_id` while it is still that host's (or, for a
        create's undo, the very directory the create made): never a newer host's."""
        with self._locked(folder) as data:
            if made is not None:  # a create's undo: its own directory, with its record or none
                if data is None:
                    mine = _identity(folder) == made
                else:
                    mine = isinstance(data, dict) and data.get("id") == host_id
                if not mine:
                    return
            elif data is None:
                return  # gone already: nothing to do
            else:
                self._expect(folder, host_id, data)
            trash = folder.with_name(f".removing-{host_id}")
            os.rename(folder, trash)  # atomic: from here on the name is free, the data ours
        _remove_tree(trash)

    # --- verbs ------------------------------------------------------------------------

    def list_hosts(self) -> list[Host] | Listing:
        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise MngrError(f"{self.root} is not a directory (the local provider's host folder)")
        hosts: list[Host] = []
        errors: list[Exception] = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir() or folder.is_symlink():
                continue
            try:
                host = self._read(folder)
            except MngrError as exc:  # one damaged host hides none of the others
                errors.append(exc)
                continue
            if host is not None:
                hosts.append(host)
        if errors:
            return Listing(hosts, errors)
        return hosts

    def create_plan(self, request: CreateRequest) -> Plan:
        folder = self.host_dir(request.name)
        snap = request.from_snapshot

        def make_dir(ctx: Context) -> None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise MngrError(f"{self.root} is not a directory") from None
            try:
                folder.mkdir()  # atomic: of two concurrent creates, exactly one wins
            except FileExistsError:
                if folder.is_dir() and not (folder / META / RECORD).exists():
                    raise ConflictError(
                        f"host {request.name!r} already exists in provider {self.provider!r} "
                        f"but {folder} holds no host record (a create still running, or a "
                        "damaged host: remove that directory by hand)"
                    ) from None
                raise ConflictError(
                    f"host {request.name!r} already exists in provider {self.provider!r}"
                ) from None
            ctx["made"] = _identity(folder)
            (folder / META).mkdir()

        def write_record(ctx: Context) -> None:
            self._write(
                folder,
                request.host_id,
                new=True,
                id=request.host_id,
                name=request.name,
                provider=self.provider,
                state=HostState.RUNNING.value,
                image=snap.id if snap else request.image,
                created_at=request.created_at,
                tags=request.tags,
                snapshots=[],
            )

        steps = [
            Step(
                f"create directory {folder}",
                action=make_dir,
                undo=Step(
                    f"remove directory {folder} (the one this create made)",
                    action=lambda ctx: self._retire(folder, request.host_id, ctx.get("made")),
                ),
            ),
        ]
        if snap is not None:
            steps.append(
                Step(
                    f"restore snapshot {snap.id} into {folder}",
                    action=lambda ctx: self._unpack(snap, folder),
                )
            )
        steps.append(Step(f"write host record {folder / META / RECORD}", action=write_record))

        def finish(ctx: Context) -> Host:
            host = self._read(folder)
            if host is None or host.id != request.host_id:
                raise ConflictError(f"host {request.name!r} was destroyed while being created")
            return host

        return Plan(steps, finish=finish)

    def destroy_plan(self, host: Host, *, force: bool = False) -> Plan:
        folder = self._folder_of(host)
        steps = [
            Step(
                f"stop processes of {host.name}",
                action=lambda ctx: self._stop_processes(folder, host.id, gone_ok=True),
            ),
            Step(f"remove directory {folder}", action=lambda ctx: self._retire(folder, host.id)),
        ]
        return Plan(steps)

    def _stop_processes(self, folder: Path, host_id: str, *, gone_ok: bool = False) -> None:
        with self._locked(folder) as data:
            if data is None and gone_ok:
                return
            self._expect(folder, host_id, data)
            _kill_groups(folder)

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        folder = self._folder_of(host)
        steps = []
        if snapshot:
            steps += self.snapshot_create_plan(host, f"{host.name}-stop-{_stamp()}").steps
        steps += [
            Step(
                f"stop processes of {host.name}",
                action=lambda ctx: self._stop_processes(folder, host.id),
            ),
            Step(
                f"mark {host.name} stopped",
                action=lambda ctx: self._write(folder, host.id, state=HostState.STOPPED.value),
            ),
        ]
        return Plan(steps)

    def start_plan(self, host: Host) -> Plan:
        folder = self._folder_of(host)
        return Plan(
            [
                Step(
                    f"mark {host.name} running",
                    action=lambda ctx: self._write(folder, host.id, state=HostState.RUNNING.value),
                ),
            ]
        )

    def tag_plan(self, host: Host, tags: dict[str, str], remove: list[str]) -> Plan:
        folder = self._folder_of(host)

        def change(data: dict[str, Any]) -> None:
            data["tags"] = changed_tags(data.get("tags") or {}, tags, remove)

        return Plan(
            [
                Step(
                    f"change the tags in {folder / META / RECORD}",
                    action=lambda ctx: self._update(folder, host.id, change),
                )
            ]
        )

    def restore_plan(self, host: Host, snapshot: Snapshot) -> Plan:
        """Unpack the snapshot into a new folder beside the host's, then swap the two in one
        rename (the name is never free for a concurrent create) and remove the old one."""
        folder = self._folder_of(host)
        beside = self.root / f"{RESTORING}{host.id}-{secrets.token_hex(4)}"

        def unpack(ctx: Context) -> None:
            beside.mkdir()
            (beside / META).mkdir()
            self._unpack(snapshot, beside)

        def swap(ctx: Context) -> None:
            with self._locked(folder) as data:
                record = self._expect(folder, host.id, data)
                _kill_groups(folder)
                record["state"] = HostState.RUNNING.value
                text = json.dumps(record, indent=2, ensure_ascii=False)
                _atomic_write(beside / META / RECORD, text)
                _exchange(beside, folder)  # from here on `beside` holds the old files

        return Plan(
            [
                Step(
                    f"unpack snapshot {snapshot.id} into {beside}",
                    action=unpack,
                    undo_if_failed=True,
                    undo=Step(f"remove {beside}", action=lambda ctx: _remove_tree(beside)),
                ),
                Step(f"stop processes of {host.name} and swap {beside} with {folder}", action=swap),
                Step(
                    f"remove the old files of {host.name}", action=lambda ctx: _remove_tree(beside)
                ),
            ],
            finish=lambda ctx: self._read(folder),
        )

    # --- snapshots --------------------------------------------------------------------

    def _unpack(self, snap: Snapshot, folder: Path) -> None:
        archive = self._snapshot_path(snap.id)
        if not archive.exists():
            raise NotFoundError(f"snapshot {snap.id} has no archive at {archive}")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(folder, filter=_restore_filter)
        except tarfile.TarError as exc:
            raise MngrError(f"cannot restore snapshot {snap.id}: {exc}") from None

    def _snapshot_path(self, snap_id: str) -> Path:
        return self.root / SNAPSHOTS / f"{snap_id}.tar.gz"

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        folder = self._folder_of(host)
        snap_id = new_snapshot_id()
        archive = self._snapshot_path(snap_id)
        meta = archive.with_name(f"{snap_id}.json")
        created = utc_now()

        def pack(ctx: Context) -> None:
            with self._locked(folder) as data:
                self._expect(folder, host.id, data)  # describe checks again, under the lock
            archive.parent.mkdir(parents=True, exist_ok=True)
            tmp = archive.with_suffix(".partial")
            with tarfile.open(tmp, "w:gz") as tar:
                for child in sorted(folder.iterdir()):
                    if child.name != META:
                        tar.add(child, arcname=child.name)
            os.replace(tmp, archive)

        def describe(ctx: Context) -> None:
            _atomic_write(
                meta,
                json.dumps(
                    {
                        "id": snap_id,
                        "name": name,
                        "host": host.name,
                        "host_id": host.id,
                        "provider": self.provider,
                        "created_at": created,
                    }
                ),
            )
            self._update(
                folder, host.id, lambda data: data.setdefault("snapshots", []).append(snap_id)
            )

        def remove(ctx: Context) -> None:
            for path in (archive, meta, archive.with_suffix(".partial")):
                path.unlink(missing_ok=True)

        return Plan(
            [
                Step(
                    f"archive {folder} to {archive}",
                    action=pack,
                    undo_if_failed=True,
                    undo=Step(f"remove {archive}", action=remove),
                ),
                Step(f"describe snapshot {snap_id}", action=describe),
            ],
            finish=lambda ctx: Snapshot(
                id=snap_id, name=name, host=host.name, provider=self.provider, created_at=created
            ),
        )

    def list_snapshots(self, host: Host | None = None) -> list[Snapshot]:
        folder = self.root / SNAPSHOTS
        if not folder.is_dir():
            return []
        snaps = []
        for meta in sorted(folder.glob("snap-*.json")):
            try:
                record = SnapshotRecord.model_validate_json(meta.read_bytes())
            except (OSError, ValueError):  # not one of ours, or half-written: not listed
                continue
            if host is None or record.host_id == host.id:
                snaps.append(
                    Snapshot(
                        **record.model_dump(exclude={"host_id"}),
                        provider=self.provider,
                    )
                )
        return snaps

    def _delete_snapshot_step(self, snap: Snapshot) -> Step:
        archive = self._snapshot_path(snap.id)

        def delete(ctx: Context) -> None:
            archive.unlink(missing_ok=True)
            archive.with_name(f"{snap.id}.json").unlink(missing_ok=True)

        return Step(f"delete {archive}", action=delete)

    def snapshot_delete_plan(self, snapshot: Snapshot) -> Plan:
        return Plan([self._delete_snapshot_step(snapshot)])

    # --- garbage ----------------------------------------------------------------------

    def find_orphans(self) -> list[Orphan]:
        """Folders a killed create, destroy or restore left under the root (each carries a
        `.mngr` folder or mngr's own name), and snapshots whose host is gone (or that were
        never described). A bare folder without `.mngr` is not mngr's to judge."""
        if not self.root.is_dir():
            return []
        listed = self.list_hosts()
        orphans = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.is_symlink():
                continue
            if folder.name.startswith((".removing-", RESTORING)):
                why = "left by a destroy or a start from a snapshot that was stopped"
            elif folder.name.startswith(".") or not (folder / META).is_dir():
                continue
            elif not (folder / META / RECORD).exists():
                why = "no host record: a create was stopped before writing it"
            else:
                continue
            orphans.append(self._orphan(folder, "folder", why))
        snaps = self.root / SNAPSHOTS
        if snaps.is_dir():
            if isinstance(listed, Listing):
                # A host whose record is damaged may own snapshots: judge none of them.
                hosts = None
            else:
                hosts = {h.id for h in listed}
            orphans += self._snapshot_orphans(snaps, hosts)
        return orphans

    def _snapshot_orphans(self, snaps: Path, hosts: set[str] | None) -> list[Orphan]:
        orphans = []
        described = set()
        for meta in sorted(snaps.glob("snap-*.json")):
            try:
                record = SnapshotRecord.model_validate_json(meta.read_bytes())
            except (OSError, ValueError):
                continue
            described.add(record.id)
            if hosts is None or record.host_id is None or record.host_id in hosts:
                continue
            archive = self._snapshot_path(record.id)
            orphans.append(
                Orphan(
                    id=str(archive),
                    kind="snapshot",
                    provider=self.provider,
                    why=f"a snapshot of host {record.host!r}, which no longer exists",
                    name=record.name,
                    created_at=record.created_at,
                    size_bytes=archive.stat().st_size if archive.exists() else None,
                    snapshot=True,
                )
            )
        for path in sorted(snaps.glob("snap-*.*")):
            snap_id = path.name.split(".", 1)[0]
            if path.suffix != ".json" and snap_id not in described:
                why = "a snapshot archive without its description: a snapshot that was stopped"
                orphans.append(self._orphan(path, "snapshot archive", why))
        return orphans

    def _orphan(self, path: Path, kind: str, why: str) -> Orphan:
        info = path.lstat()
        at = datetime.fromtimestamp(info.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        size = info.st_size if path.is_file() else None
        return Orphan(
            id=str(path), kind=kind, provider=self.provider, why=why, created_at=at, size_bytes=size
        )

    def orphan_delete_plan(self, orphan: Orphan) -> Plan:
        path = Path(orphan.id)
        if path.parent not in (self.root, self.root / SNAPSHOTS) or path.name.startswith(".."):
            raise MngrError(f"refusing to delete {path}: not directly under {self.root}")

        def delete(ctx: Context) -> None:
            if orphan.kind == "snapshot":  # its description goes with it
                path.with_name(path.name.split(".", 1)[0] + ".json").unlink(missing_ok=True)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

        return Plan([Step(f"delete {path}", action=delete)])

    # --- exec -------------------------------------------------------------------------

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        folder = self._folder_of(host)
        if detach:
            argv = [sys.executable, "-m", "mngr_backends.local", "detach", str(folder), "--", *argv]
        else:
            argv = shell_exec(argv)
        return Command(argv, cwd=str(folder))

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        folder = self._folder_of(host)
        return Command([os.environ.get("SHELL") or "/bin/sh"], cwd=str(folder))

    def local_folder(self, host: Host) -> str | None:
        return str(self._folder_of(host))

    def port_command(self, host: Host, port: int) -> None:
        return None  # the host is a folder of this machine: its ports are ours

    def check(self) -> dict[str, Any]:
        listed = self.list_hosts()
        return {
            "root": str(self.root),
            "hosts": len(listed.items if isinstance(listed, Listing) else listed),
        }

    def _folder_of(self, host: Host) -> Path:
        folder = self.host_dir(host.name)
        if folder.is_symlink() or not folder.resolve().is_relative_to(self.root.resolve()):
            raise MngrError(f"refusing to touch {folder}: not a directory under {self.root}")
        return folder


def _root_of(config: LocalConfig) -> Path:
    if config.root:
        return Path(os.path.expanduser(config.root))
    return paths.data_home() / "local" / config.name


def _load(record: Path) -> Any:
    """A record file's JSON, or None when there is no such file."""
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MngrError(f"unreadable host record {record}: {exc}") from None


def _stamp() -> str:
    return utc_now().replace("-", "").replace(":", "").lower()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); where the system
    has no such call, two renames (the name stands free for a moment between them)."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        renameat2 = None
    if renameat2 is not None:
        at_cwd, exchange = -100, 2
        if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
            return
        errno = ctypes.get_errno()
        if errno not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: no exchange here
            raise OSError(errno, os.strerror(errno), str(b))
    held = a.with_name(a.name + ".old")
    os.rename(b, held)
    os.rename(a, b)
    os.rename(held, a)


def _restore_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's 'data' filter, except that a symbolic link keeps its target as it was, an
    absolute one too (a virtualenv's bin/python). Still nothing lands outside `dest`: every
    member's own path is checked with the links already made resolved (so nothing is written
    through a link), a hard link must point inside, devices are refused."""
    if member.name.split("/", 1)[0] == META:
        return None  # the record, lock and pid files are the new host's own
    if member.issym():
        owner = {"uid": None, "gid": None, "uname": None, "gname": None}
        return tarfile.tar_filter(member, dest).replace(**owner, deep=False)
    return tarfile.data_filter(member, dest)


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which directory sits at this path now (device, inode): a name can be reused."""
    try:
        info = folder.lstat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _remove_tree(folder: Path) -> None:
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)


def _kill_groups(folder: Path) -> None:
    """End every process group `exec --detach` started in this host, and only those: a pid
    file that names 0, 1, mngr's own process (group) or a pid since reused is never obeyed."""
    pid_dir = folder / META / "pids"
    if not pid_dir.is_dir():
        return
    ours = {os.getpid(), os.getpgrp()}
    for pid_file in pid_dir.iterdir():
        try:
            pid = int(pid_file.name, 10)
            started, token = pid_file.read_text(encoding="utf-8").split("\n", 1)[0].split(" ")
        except (ValueError, OSError):  # not written by _detach: nothing to identify it by
            pid = 0
        if pid > 1 and pid not in ours and _is_detached_group(pid, started, token):
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        pid_file.unlink(missing_ok=True)


def _is_detached_group(pgid: int, started: str, token: str) -> bool:
    """Is process group `pgid` still the one _detach started (leader start time `started`,
    environment marked with `token`)?"""
    leader = _process(pgid)
    if leader is not None:
        return leader == (pgid, started)
    # The leader has exited. The kernel keeps its pid unused while its group lives, but the
    # group may be a later one of a process that got the pid after ours ended: a member of
    # ours carries the token in its environment.
    mark = f"{DETACH_ENV}={token}".encode()
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:  # no /proc: nothing can be identified, so nothing is signalled
        return False
    for entry in entries:
        if entry.name.isdigit() and (_process(int(entry.name)) or (0,))[0] == pgid:
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    return True
            except OSError:
                continue
    return False


def _process(pid: int) -> tuple[int, str] | None:
    """(process group, start time in clock ticks since boot) of a live process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": comm may hold anything
    return int(fields[2]), fields[19]


def _detach(folder: str, argv: list[str]) -> int:
    """`python -m mngr_backends.local detach DIR -- CMD...`: start CMD in its own process
    group, output to a log in the host, and record the group so `stop` can end it."""
    meta = Path(folder) / META
    try:
        (meta / "pids").mkdir(parents=True, exist_ok=True)
        (meta / "logs").mkdir(exist_ok=True)
        log = open(meta / "logs" / "detached.log", "ab")  # noqa: SIM115 - handed to the child
    except OSError as exc:
        sys.stderr.write(f"error: cannot prepare {meta} for a detached command: {exc.strerror}\n")
        return 1
    token = secrets.token_hex(16)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=folder,
            env={**os.environ, DETACH_ENV: token},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        sys.stderr.write(f"error: cannot start {argv[0]!r}: {exc.strerror}\n")
        return 127
    # Its start time tells this process from a later one given the same pid (see _kill_groups).
    started = _process(proc.pid)
    (meta / "pids" / str(proc.pid)).write_text(
        f"{started[1] if started else '-'} {token}\n{' '.join(argv)}\n", encoding="utf-8"
    )
    sys.stdout.write(f"started pid {proc.pid} (log: {meta / 'logs' / 'detached.log'})\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "detach" and sys.argv[3] == "--":
        sys.exit(_detach(sys.argv[2], sys.argv[4:]))
    sys.exit("usage: python -m mngr_backends.local detach DIR -- CMD...")
