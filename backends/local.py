"""Local backend: a host is a directory under the data dir, its record a file inside it.

Layout of one provider instance (default `$XDG_DATA_HOME/mngr/local/<provider>/`):

    <name>/                 the host: commands run here
    <name>/.mngr/host.json  the record (id, name, tags, state, created_at): the only state
    <name>/.mngr/pids/      process groups started by `host exec --detach`
    .snapshots/<id>.tar.gz  snapshots (outlive the host), with <id>.json beside them
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mngr import paths
from mngr.backend import Backend, CreateOptions, CreateRequest, ProviderConfig
from mngr.errors import ConflictError, MngrError, NotFoundError, PartialListError
from mngr.names import check_host_name, new_snapshot_id
from mngr.plan import Context, Plan, Step
from mngr.records import Host, HostState, Snapshot, utc_now
from mngr.runner import Command

META = ".mngr"
RECORD = "host.json"
SNAPSHOTS = ".snapshots"


class LocalConfig(ProviderConfig):
    root: str | None = None  # default: $XDG_DATA_HOME/mngr/local/<provider>


class LocalCreateOptions(CreateOptions):
    pass


class LocalBackend(Backend):
    name = "local"
    config_model = LocalConfig
    create_options_model = LocalCreateOptions
    unsupported = {}

    config: LocalConfig

    @property
    def root(self) -> Path:
        if self.config.root:
            return Path(os.path.expanduser(self.config.root))
        return paths.data_home() / "local" / self.provider

    def host_dir(self, name: str) -> Path:
        return self.root / check_host_name(name)

    # --- records ----------------------------------------------------------------------

    def _read(self, folder: Path) -> Host | None:
        record = folder / META / RECORD
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None  # being created, or not ours
        except (OSError, ValueError) as exc:
            raise MngrError(f"unreadable host record {record}: {exc}") from None
        try:
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("name") != folder.name:
                raise ValueError(f"its name {data.get('name')!r} is not the directory's")
            return Host(
                id=data["id"],
                name=data["name"],
                provider=self.provider,
                backend=self.name,
                state=HostState(data.get("state", "unknown")),
                image=data.get("image"),
                created_at=data.get("created_at"),
                tags=data.get("tags", {}),
                address={"path": str(folder)},
                snapshots=data.get("snapshots", []),
                handle=str(folder),
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise MngrError(f"bad host record {record}: {where}: {err['msg']}") from None
        except KeyError as exc:
            raise MngrError(f"bad host record {record}: no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise MngrError(f"bad host record {record}: {exc}") from None

    def _write(self, folder: Path, *, new: bool = False, **changes: Any) -> None:
        self._update(folder, lambda data: data.update(changes), new=new)

    def _update(
        self, folder: Path, change: Callable[[dict[str, Any]], None], *, new: bool = False
    ) -> None:
        """Read-modify-write of the record, under a lock so that concurrent stop, start and
        snapshot of one host (several mngr processes) never lose each other's update."""
        record = folder / META / RECORD
        try:
            lock = os.open(folder / META / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        except FileNotFoundError:  # destroyed meanwhile: never leave a stub record behind
            raise NotFoundError(f"host {folder.name!r} no longer exists ({record})") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data: dict[str, Any] = {}
            if not new:
                try:
                    data = json.loads(record.read_text(encoding="utf-8"))
                except FileNotFoundError:
                    raise NotFoundError(
                        f"host {folder.name!r} no longer exists ({record})"
                    ) from None
                except ValueError as exc:
                    raise MngrError(f"unreadable host record {record}: {exc}") from None
            change(data)
            _atomic_write(record, json.dumps(data, indent=2, ensure_ascii=False))
        finally:
            os.close(lock)

    # --- verbs ------------------------------------------------------------------------

    def list_hosts(self) -> list[Host]:
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
            raise PartialListError(hosts, errors)
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
            (folder / META).mkdir()

        def restore(ctx: Context) -> None:
            assert snap is not None
            archive = self._snapshot_path(snap.id)
            if not archive.exists():
                raise NotFoundError(f"snapshot {snap.id} has no archive at {archive}")
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(folder, filter="data")

        def write_record(ctx: Context) -> None:
            self._write(
                folder,
                new=True,
                id=request.host_id,
                name=request.name,
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
                undo=Step(f"remove directory {folder}", action=lambda ctx: _remove_tree(folder)),
            ),
        ]
        if snap is not None:
            steps.append(Step(f"restore snapshot {snap.id} into {folder}", action=restore))
        steps.append(Step(f"write host record {folder / META / RECORD}", action=write_record))

        def finish(ctx: Context) -> Host:
            host = self._read(folder)
            assert host is not None
            return host

        return Plan(steps, finish=finish)

    def destroy_plan(self, host: Host, *, force: bool = False, purge: bool = False) -> Plan:
        folder = self._folder_of(host)
        steps = [
            Step(f"stop processes of {host.name}", action=lambda ctx: _kill_groups(folder)),
            Step(f"remove directory {folder}", action=lambda ctx: _remove_tree(folder)),
        ]
        if purge:
            for snap in self.list_snapshots(host):
                steps.append(self._delete_snapshot_step(snap))
        return Plan(steps)

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        folder = self._folder_of(host)
        steps = []
        if snapshot:
            steps += self.snapshot_create_plan(host, f"{host.name}-stop-{_stamp()}").steps
        steps += [
            Step(f"stop processes of {host.name}", action=lambda ctx: _kill_groups(folder)),
            Step(
                f"mark {host.name} stopped",
                action=lambda ctx: self._write(folder, state=HostState.STOPPED.value),
            ),
        ]
        return Plan(steps)

    def start_plan(self, host: Host) -> Plan:
        folder = self._folder_of(host)
        return Plan(
            [
                Step(
                    f"mark {host.name} running",
                    action=lambda ctx: self._write(folder, state=HostState.RUNNING.value),
                ),
            ]
        )

    # --- snapshots --------------------------------------------------------------------

    def _snapshot_path(self, snap_id: str) -> Path:
        return self.root / SNAPSHOTS / f"{snap_id}.tar.gz"

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        folder = self._folder_of(host)
        snap_id = new_snapshot_id()
        archive = self._snapshot_path(snap_id)
        meta = archive.with_name(f"{snap_id}.json")
        created = utc_now()

        def pack(ctx: Context) -> None:
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
            self._update(folder, lambda data: data.setdefault("snapshots", []).append(snap_id))

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
                data = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if host is not None and data.get("host_id") != host.id:
                continue
            snaps.append(
                Snapshot(
                    id=data["id"],
                    name=data["name"],
                    host=data["host"],
                    provider=self.provider,
                    created_at=data.get("created_at"),
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

    # --- exec -------------------------------------------------------------------------

    def _running_folder(self, host: Host) -> Path:
        if host.state == HostState.STOPPED:
            raise MngrError(f"host {host.name!r} is stopped; run 'mngr host start {host.name}'")
        return self._folder_of(host)

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        folder = self._running_folder(host)
        if not argv:
            raise MngrError("no command given (use: mngr host exec NAME -- CMD...)")
        if detach:
            argv = [sys.executable, "-m", "mngr_backends.local", "detach", str(folder), "--", *argv]
        else:
            # Through `sh -c 'exec "$@"'` (arguments stay arguments, never shell text) so an
            # unknown command answers 127 "not found", as it would in a shell on the host.
            argv = ["/bin/sh", "-c", 'exec "$@"', "mngr-exec", *argv]
        return Command(argv, cwd=str(folder))

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        folder = self._running_folder(host)
        return Command([os.environ.get("SHELL") or "/bin/sh"], cwd=str(folder))

    def check(self) -> dict[str, Any]:
        return {"root": str(self.root), "hosts": len(self.list_hosts())}

    def _folder_of(self, host: Host) -> Path:
        folder = self.host_dir(host.name)
        if folder.is_symlink() or not folder.resolve().is_relative_to(self.root.resolve()):
            raise MngrError(f"refusing to touch {folder}: not a directory under {self.root}")
        return folder


def _stamp() -> str:
    return utc_now().replace("-", "").replace(":", "").lower()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _remove_tree(folder: Path) -> None:
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)


def _kill_groups(folder: Path) -> None:
    """End every process group `exec --detach` started in this host."""
    pid_dir = folder / META / "pids"
    if not pid_dir.is_dir():
        return
    for pid_file in pid_dir.iterdir():
        try:
            os.killpg(int(pid_file.name), signal.SIGTERM)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        pid_file.unlink(missing_ok=True)


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
    try:
        proc = subprocess.Popen(
            argv,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        sys.stderr.write(f"error: cannot start {argv[0]!r}: {exc.strerror}\n")
        return 127
    (meta / "pids" / str(proc.pid)).write_text(" ".join(argv))
    sys.stdout.write(f"started pid {proc.pid} (log: {meta / 'logs' / 'detached.log'})\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "detach" and sys.argv[3] == "--":
        sys.exit(_detach(sys.argv[2], sys.argv[4:]))
    sys.exit("usage: python -m mngr_backends.local detach DIR -- CMD...")
