"""Use cases: every verb once, over the engine, for every front end (the CLI, `mngr serve`,
a Python caller). They return data (hosts, plans, outcomes); they never print or speak HTTP.

A verb that changes something is prepared first, as a `Batch` of plans, then run: the CLI
prints a batch for `--dry-run`, or runs it and reports each outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mngr.backend import Backend, Capability, CreateOptions, CreateRequest
from mngr.config import Settings
from mngr.engine import ROW_ERRORS, Engine, ListResult, Outcome
from mngr.errors import (
    ConflictError,
    MngrError,
    NotFoundError,
    UnreachableError,
    UnsupportedError,
    UsageError,
    validation_message,
)
from mngr.gc import GcReport
from mngr.plan import Plan
from mngr.records import Host, HostState, ProviderErrorRow, Snapshot, utc_now
from mngr.resources import ResourceRequest
from mngr.runner import Command, Runner

if TYPE_CHECKING:
    from mngr.forward import Forward
    from mngr.inventory import Inventory
    from mngr.provision import HostResult as ProvisionResult
    from mngr.transfer import Progress, Request, TransferResult, Transport

# A plain stop of a stopped host (or start of a running one) has nothing to do.
_ALREADY = {"stop": HostState.STOPPED, "start": HostState.RUNNING}

# Where `exec --detach` output goes, in the host's working folder (local: the host's folder;
# docker: the container's workdir; ssh and aws: the login's home).
DETACHED_LOG = ".mngr-detached.log"

NO_COMMAND = "no command given (use: mngr host exec NAME -- CMD...)"


@dataclass
class Job:
    """One plan of a batch, and what it acts on."""

    label: str  # names it in messages: `web.local`, a snapshot id
    backend: Backend
    plan: Plan
    host: Host | None = None
    snapshot: Snapshot | None = None


@dataclass
class SshConfigText:
    stanzas: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (host, why)
    errors: list[ProviderErrorRow] = field(default_factory=list)  # providers that failed

    @property
    def text(self) -> str:
        return "\n".join(self.stanzas)


@dataclass
class Batch:
    jobs: list[Job] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # references that named nothing
    # hosts already as asked (`stop` of a stopped host): nothing to run
    unchanged: list[Host] = field(default_factory=list)
    # (reference, why) of each item the real run refuses: while there is one it runs nothing
    # (`Service.run` raises the first); a dry run names them all and exits as the real one.
    refused: list[tuple[str, MngrError]] = field(default_factory=list)
    # Run after `jobs`, each once the job of its `host` succeeded: what `destroy --purge`
    # deletes of a host's snapshots.
    then: list[Job] = field(default_factory=list)
    # (snapshot, why) of each snapshot `destroy --purge` keeps: another host runs from it.
    kept: list[tuple[Snapshot, str]] = field(default_factory=list)

    @property
    def all_jobs(self) -> list[Job]:
        """`jobs`, then `then`: the order of `Service.run`'s outcomes."""
        return self.jobs + self.then

    def check(self) -> None:
        """Raise the first refusal: the real run's answer when any item is refused."""
        if self.refused:
            raise self.refused[0][1]

    def render(self) -> list[str]:
        return [line for job in self.all_jobs for line in job.plan.render()]


class Service:
    def __init__(self, settings: Settings, runner: Runner | None = None, jobs: int = 8) -> None:
        self.settings = settings
        self.engine = Engine(settings, runner, jobs=jobs)
        self._creating: dict[str, threading.Event] = {}  # host id -> set once its create ends
        self._creating_lock = threading.Lock()
        # False in `mngr serve` (unless --allow-local-exec): exec, shell and ports of hosts on
        # this machine are refused.
        self.exec_on_this_machine = True

    # --- providers ----------------------------------------------------------------------

    def provider_rows(self) -> list[dict[str, Any]]:
        return [self.provider_row(name) for name in self.settings.providers]

    def provider_row(self, name: str) -> dict[str, Any]:
        """What `provider list/show` and `GET /v1/providers` say of one provider."""
        from mngr.registry import is_known, load_backend

        entry = self.settings.provider(name)
        if entry.unavailable:
            status = f"unavailable: {entry.unavailable}"
        elif entry.config is not None and not entry.config.enabled:
            status = "disabled"
        else:
            status = "configured"
        row: dict[str, Any] = {
            "name": entry.name,
            "backend": entry.backend,
            "status": status,
            "default": entry.name == self.settings.default_provider,
            "source": entry.sources[-1],
            "unsupported": {},
        }
        if is_known(entry.backend):
            cls = load_backend(entry.backend)
            note = cls.status_note(entry.config) if entry.config is not None else None
            if note and status == "configured":
                row["status"] = f"configured {note}"
            row["unsupported"] = {str(k): v for k, v in cls.unsupported.items()}
        return row

    def check(self, names: list[str] | None) -> list[Outcome]:
        """One cheap call per provider; each outcome's value is the backend's facts plus
        `answered_ms`, how long the provider took."""
        import time

        from mngr.engine import fan_out

        def timed(provider: str) -> dict[str, Any]:
            start = time.monotonic()
            facts = self.engine.backend(provider).check()
            return {**facts, "answered_ms": round((time.monotonic() - start) * 1000)}

        wanted = self.engine.usable_providers(names)
        return fan_out(
            timed,
            wanted,
            jobs=max(len(wanted), 1),
            deadline_s=self.engine.deadline(wanted),
            waiting=self.engine.waiting,
        )

    # --- hosts --------------------------------------------------------------------------

    def list_hosts(
        self,
        providers: list[str] | None = None,
        *,
        state: str | None = None,
        tags: dict[str, str | None] | None = None,
        snapshots: bool = False,
    ) -> ListResult:
        """Hosts of the providers (all when None); `tags`: KEY=VALUE must match, a KEY with
        None only has to be there; `snapshots`: each host's as its provider holds them now
        (`attach_snapshots`: one more listing per provider)."""
        result = self.engine.list_hosts(providers or None)
        result.hosts = [
            h
            for h in result.hosts
            if (state is None or h.state == state)
            and all(k in h.tags and (v is None or h.tags[k] == v) for k, v in (tags or {}).items())
        ]
        if snapshots:
            self.attach_snapshots(result.hosts)
        return result

    def attach_snapshots(self, hosts: list[Host]) -> None:
        """Set each host's `snapshots` to the ids of those its provider holds now (one
        listing per provider): a snapshot is a host's when it names the host and is not
        older than it (an older one is of an earlier host of that name). A provider whose
        snapshots cannot be listed leaves its hosts' records as they are."""
        wanted = sorted({h.provider for h in hosts})
        if not wanted:
            return
        snaps, errors = self.engine.list_snapshots(wanted)
        failed = {row.provider for row in errors}
        for host in hosts:
            if host.provider in failed:
                continue
            born = (host.created_at or "")[:19]
            host.snapshots = [
                s.id
                for s in snaps
                if s.provider == host.provider
                and s.host in (host.name, host.id)
                and (s.created_at or "")[:19] >= born
            ]

    def hosts_of_provider(self, name: str) -> list[Host]:
        """Every host a provider has; an error when it cannot tell (unreachable)."""
        self.settings.provider(name)  # an unknown name is its own error
        result = self.engine.list_hosts([name])
        if result.errors:
            row = result.errors[0]
            raise ROW_ERRORS.get(row.kind, UnreachableError)(
                f"cannot tell whether provider {name!r} has hosts: {row.message}"
            )
        return result.hosts

    def resolve_host(self, ref: str, provider: str | None = None) -> Host:
        return self.engine.resolve_host(ref, provider)

    def prepare_create(
        self,
        names: list[str],
        *,
        provider: str | None = None,
        image: str | None = None,
        tags: dict[str, str] | None = None,
        from_snapshot: str | None = None,
        options: CreateOptions | dict[str, Any] | None = None,
        resources: ResourceRequest | None = None,
        host_ids: list[str] | None = None,
        remote: bool = False,
        idle_timeout: str | None = None,
    ) -> Batch:
        """Plans to create `names` on one provider. `options` as a dict is validated against
        the backend's create options; `remote` refuses those that act on this machine.
        `idle_timeout` (`30m`; `0`: never) overrides the provider's `idle_timeout` setting."""
        from mngr.names import check_host_name, new_host_id
        from mngr.resources import parse_idle_timeout

        for name in names:
            check_host_name(name)
        if len(set(names)) != len(names):
            raise UsageError("the same host name is given twice")
        if from_snapshot and not provider:  # the snapshot says where its host can be made
            provider = self.engine.resolve_snapshot(from_snapshot).provider
        provider = provider or self.settings.default_provider
        backend = self.engine.backend(provider)
        backend.require(Capability.CREATE)
        resources = resources or ResourceRequest()
        backend.require_resources(resources)
        if not isinstance(options, CreateOptions):
            options = self._create_options(backend, options or {}, remote=remote)
        idle_s = backend.config.idle_timeout or None
        if idle_timeout is not None:
            idle_s = parse_idle_timeout(idle_timeout)
        if idle_s:
            backend.require(Capability.IDLE_STOP)
        snapshot = None
        if from_snapshot:
            backend.require(Capability.SNAPSHOT)
            snapshot = self.engine.resolve_snapshot(from_snapshot, provider)
        ids = host_ids or [new_host_id() for _ in names]
        batch = Batch()
        for name, host_id in zip(names, ids, strict=True):
            request = CreateRequest(
                name=name,
                host_id=host_id,
                created_at=utc_now(),
                image=image,
                tags=dict(tags or {}),
                from_snapshot=snapshot,
                options=options,
                resources=resources,
                idle_timeout_s=idle_s,
            )
            batch.jobs.append(Job(f"{name}.{provider}", backend, backend.create_plan(request)))
        return batch

    @staticmethod
    def _create_options(backend: Backend, values: dict[str, Any], *, remote: bool) -> CreateOptions:
        from pydantic import ValidationError

        model = backend.create_options_model
        for key in values:
            info = model.model_fields.get(key)
            extra = info.json_schema_extra if info is not None else None
            if remote and isinstance(extra, dict) and extra.get("serve") is False:
                raise UsageError(
                    f"options.{key}: backend {backend.name!r} does not take this option through "
                    "mngr serve (it acts on the server's own machine)"
                )
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            raise UsageError(f"options.{validation_message(exc.errors()[0])}") from None

    def prepare_on_hosts(
        self,
        verb: str,
        refs: list[str],
        provider: str | None = None,
        *,
        missing_ok: bool = False,
        **how: Any,
    ) -> Batch:
        """Plans for `destroy`, `stop` or `start` of each referenced host (resolved once, by
        id from then on)."""
        needs = {"destroy": None, "stop": Capability.STOP_START, "start": Capability.STOP_START}
        if verb not in needs:
            raise ValueError(verb)
        purge = bool(how.pop("purge", False))  # the snapshots are jobs of their own (`_purge`)
        batch = Batch()
        for ref, host in self.engine.resolve_each(refs, provider, missing_ok=missing_ok):
            if isinstance(host, MngrError):
                batch.refused.append((ref, host))
                continue
            if host is None:
                batch.missing.append(ref)
                continue
            if not any(how.values()) and host.state == _ALREADY.get(verb):
                batch.unchanged.append(host)
                continue
            try:
                backend = self.engine.backend(host.provider)
                capability = needs[verb]
                if capability is not None:
                    backend.require(capability, host)
                plan = getattr(backend, f"{verb}_plan")(host, **how)
            except MngrError as exc:
                batch.refused.append((host.ref, exc))
                continue
            batch.jobs.append(Job(host.ref, backend, plan, host=host))
        if purge:
            self._purge(batch)
        return batch

    def _purge(self, batch: Batch) -> None:
        """The snapshots of the hosts `batch` destroys, as jobs run once their host is gone;
        a snapshot another host runs from (a docker image its container uses) is kept."""
        going = {job.host.id for job in batch.jobs if job.host is not None}
        staying: dict[str, list[Host]] = {}  # per provider: one listing, however many hosts
        for job in list(batch.jobs):
            host, backend = job.host, job.backend
            assert host is not None
            try:
                snaps = backend.list_snapshots(host)
                if snaps and backend.hosts_pin_snapshots and host.provider not in staying:
                    staying[host.provider] = [
                        h for h in self.hosts_of_provider(host.provider) if h.id not in going
                    ]
                others = staying.get(host.provider, [])
                for snap in snaps if isinstance(snaps, list) else snaps.items:
                    users = _users(snap, others)
                    if users:
                        batch.kept.append((snap, f"used by host {', '.join(users)}"))
                        continue
                    plan = backend.snapshot_delete_plan(snap)
                    batch.then.append(Job(snap.id, backend, plan, host=host, snapshot=snap))
            except MngrError as exc:
                batch.refused.append((f"{host.ref} --purge", exc))

    def prepare_tag(
        self,
        ref: str,
        tags: dict[str, str],
        remove: list[str] | None = None,
        provider: str | None = None,
        *,
        own: bool = False,
    ) -> Batch:
        """A plan that sets `tags` and removes the keys `remove` on one host. Keys and values
        are checked as create checks them, before any vendor call; `own`: mngr's own tags
        (`mngr.provisioned`) pass too."""
        from mngr.names import check_tag

        remove = list(dict.fromkeys(remove or []))
        for key, value in tags.items():
            check_tag(key, value, own=own)
        for key in remove:
            check_tag(key, "", own=own)
        both = sorted(set(tags) & set(remove))
        if both:
            raise UsageError(f"tag {both[0]!r} is both set and removed")
        if not tags and not remove:
            raise UsageError("no tag given: pass KEY=VALUE to set, or --remove KEY")
        host = self.engine.resolve_host(ref, provider)
        backend = self.engine.backend(host.provider)
        backend.require(Capability.TAGS, host)
        plan = backend.tag_plan(host, dict(tags), remove)
        return Batch([Job(host.ref, backend, plan, host=host)])

    def prepare_restore(self, ref: str, snapshot: str, provider: str | None = None) -> Batch:
        """A plan that starts one host (same name and id) from a chosen snapshot of its
        provider: its filesystem becomes the snapshot's."""
        host = self.engine.resolve_host(ref, provider)
        backend = self.engine.backend(host.provider)
        backend.require(Capability.RESTORE, host)
        snap = self.engine.resolve_snapshot(snapshot, host.provider)
        plan = backend.restore_plan(host, snap)
        return Batch([Job(host.ref, backend, plan, host=host, snapshot=snap)])

    def exec_command(
        self,
        ref: str | Host,
        argv: list[str],
        provider: str | None = None,
        *,
        tty: bool = False,
        detach: bool = False,
    ) -> Command:
        """The command that runs `argv` on the host, stdio passed through. A `Host` from
        `running_host` is used as it is: a caller running many commands resolves it once."""
        if not argv:
            raise UsageError(NO_COMMAND)
        if isinstance(ref, Host):  # resolved once by the caller (`running_host`)
            host, backend = ref, self.engine.backend(ref.provider)
        else:
            host, backend = self._transport(ref, provider)
        if detach:  # its output goes to the host's log, for `mngr host logs`
            argv = ["sh", "-c", f'exec "$@" >>{DETACHED_LOG} 2>&1 </dev/null', "mngr-detach", *argv]
        return backend.exec_command(host, argv, tty=tty, detach=detach)

    def logs_command(
        self, ref: str, provider: str | None = None, *, lines: int = 50, follow: bool = False
    ) -> Command:
        """The command that prints the output of the host's detached commands (`exec -d`):
        its last `lines` lines, then, with `follow`, what comes until Ctrl-C."""
        if lines < 0:
            raise UsageError("--lines must be 0 or more")
        script = (  # $0: how many lines; $1: -f to follow, or nothing
            f'[ -f {DETACHED_LOG} ] || {{ echo "no output of detached commands yet" >&2; '
            f'[ "$1" = -f ] || exit 0; touch {DETACHED_LOG}; }}; '
            f'exec tail -n "$0" $1 {DETACHED_LOG}'
        )
        words = ["sh", "-c", script, str(lines)] + (["-f"] if follow else [])
        return self.exec_command(ref, words, provider)

    def running_host(self, ref: str, provider: str | None = None) -> Host:
        """The host, refused when it is not running or its transport may not be used: for a
        caller that runs many commands (a pyinfra deploy) and resolves the host once."""
        return self._transport(ref, provider)[0]

    def shell_command(self, ref: str, provider: str | None = None, *, tty: bool = True) -> Command:
        host, backend = self._transport(ref, provider)
        return backend.shell_command(host, tty=tty)

    def port_command(self, ref: str, port: int, provider: str | None = None) -> Command | None:
        """The command whose stdio is one connection to `port` inside the host; None: the
        host's ports are this machine's own (connect to 127.0.0.1:`port`)."""
        host, backend = self._transport(ref, provider)
        return backend.port_command(host, port)

    def _transport(self, ref: str, provider: str | None) -> tuple[Host, Backend]:
        """A running host whose transport may be used, and its backend."""
        host = self._running(ref, provider)
        backend = self.engine.backend(host.provider)
        backend.require(Capability.EXEC, host)
        if backend.on_this_machine and not self.exec_on_this_machine:
            raise UnsupportedError(
                f"host {host.ref!r} is a folder of the server's own machine: a command in it "
                "would run as the server's user; the server allows that only when started "
                "with --allow-local-exec"
            )
        self._in_use(backend, host)
        return host, backend

    def touch(self, ref: str, provider: str | None = None) -> Host:
        """Reset a host's idle clock (mngr.idle): it counts as in use now."""
        host = self._running(ref, provider)
        backend = self.engine.backend(host.provider)
        backend.require(Capability.IDLE_STOP, host)
        if not host.idle_timeout_s:
            raise UsageError(
                f"host {host.ref!r} has no idle timeout (give one at create: --idle-timeout 30m)"
            )
        plan = backend.touch_plan(host)
        if plan is None:
            self._touch(backend, host)
        else:
            self.run_one(Batch([Job(host.ref, backend, plan, host=host)]))
        return host

    def _touch(self, backend: Backend, host: Host) -> None:
        from mngr.idle import TOUCH_ARGV

        command = backend.exec_command(host, TOUCH_ARGV)
        backend.run(
            Command(command.argv, backend.config.timeout_s, env=command.env, cwd=command.cwd)
        )

    def _in_use(self, backend: Backend, host: Host) -> None:
        """Before an exec, shell, push, pull or forward: the host's idle clock starts again,
        so a command shorter than the watcher's poll still counts. Best effort: while the
        command runs, its process keeps the host in use anyway."""
        if host.idle_timeout_s and not backend.resets_idle_clock_itself:
            try:
                self._touch(backend, host)
            except MngrError:
                pass

    def push(
        self,
        ref: str,
        sources: list[str],
        dest: str | None = None,
        *,
        provider: str | None = None,
        exclude: list[str] | None = None,
        delete: bool = False,
        method: str | None = None,
        progress: Progress | None = None,
    ) -> TransferResult:
        """Copy local files and folders into DEST on the host (its working folder by default).
        `method` forces rsync or tar; `progress` is told the bytes moved so far."""
        from mngr import transfer

        transport, request = self._transfer(
            ref, provider, sources, dest, exclude, delete, method, progress
        )
        return transfer.push(transport, request)

    def pull(
        self,
        ref: str,
        sources: list[str],
        dest: str | None = None,
        *,
        provider: str | None = None,
        exclude: list[str] | None = None,
        delete: bool = False,
        method: str | None = None,
        progress: Progress | None = None,
    ) -> TransferResult:
        """Copy files and folders of the host into the local folder DEST (`.` by default)."""
        from mngr import transfer

        transport, request = self._transfer(
            ref, provider, sources, dest, exclude, delete, method, progress
        )
        return transfer.pull(transport, request)

    def _transfer(
        self,
        ref: str,
        provider: str | None,
        sources: list[str],
        dest: str | None,
        exclude: list[str] | None,
        delete: bool,
        method: str | None,
        progress: Progress | None,
    ) -> tuple[Transport, Request]:
        from mngr.transfer import Request, Transport

        host = self._running(ref, provider)
        backend = self.engine.backend(host.provider)
        backend.require(Capability.EXEC, host)
        self._in_use(backend, host)
        request = Request(
            sources=list(sources),
            dest=dest or ".",
            exclude=list(exclude or []),
            delete=delete,
            method=method,
            protected=backend.transfer_protected,
            progress=progress,
        )
        return Transport(backend, host), request

    def forward(
        self,
        ref: str,
        ports: list[str],
        provider: str | None = None,
        *,
        address: str = "127.0.0.1",
        report: Callable[[str], None] = lambda _: None,
    ) -> Forward:
        """A forward of `ports` (`[LOCAL_PORT:]REMOTE_PORT` each) to the host, not yet open:
        the caller opens it, serves until it is done, then closes it."""
        from mngr.forward import Forward, SshRoute, TransportRoute, bind_address, parse_ports

        pairs = parse_ports(ports)
        address = bind_address(address)
        host = self._running(ref, provider)
        backend = self.engine.backend(host.provider)
        endpoint = backend.ssh_endpoint(host)
        self._in_use(backend, host)
        if endpoint is not None:
            route: SshRoute | TransportRoute = SshRoute(endpoint, backend.classify)
        else:
            route = TransportRoute(
                lambda port: backend.port_channel(host, port) or backend.port_command(host, port)
            )
        return Forward(host.ref, route, pairs, address, report)

    def ssh_config(self, refs: list[str], provider: str | None = None) -> SshConfigText:
        """`Host` stanzas for the hosts (every host when none is named) with an ssh endpoint;
        the others, with the reason, in `skipped`."""
        from mngr.toolkit.ssh import config_stanza

        if refs:
            hosts = [h for _, h in self.engine.resolve_hosts(refs, provider) if h is not None]
            errors: list[ProviderErrorRow] = []
        else:
            listing = self.list_hosts([provider] if provider else None)
            hosts, errors = listing.hosts, listing.errors
        names = [h.name for h in hosts]
        result = SshConfigText(errors=errors)
        for host in hosts:
            backend = self.engine.backend(host.provider)
            try:
                endpoint = backend.ssh_endpoint(host)
                if endpoint is None:
                    raise MngrError(
                        f"backend {backend.name!r} has no ssh endpoint (use mngr host exec, "
                        "shell or forward)"
                    )
                aliases = [host.ref] if names.count(host.name) > 1 else [host.name, host.ref]
                result.stanzas.append(config_stanza(aliases, endpoint))
            except (MngrError, ValueError) as exc:
                result.skipped.append((host.ref, str(exc)))
        return result

    # --- provisioning (pyinfra) -----------------------------------------------------------

    def provision(
        self,
        refs: list[str | Host],
        deploy: str,
        *,
        data: dict[str, str] | None = None,
        dry_run: bool = False,
        provider: str | None = None,
    ) -> list[ProvisionResult]:
        """Run the pyinfra deploy on the hosts (one pyinfra run, `jobs` hosts at once, each
        reached by mngr's connector): one result per host. A host that is not running fails
        alone; pyinfra's output goes to stderr as it prints it."""
        from mngr import provision

        provision.require_pyinfra()
        deploy = provision.deploy_file(deploy)
        named = [r for r in refs if isinstance(r, str)]
        found = dict(self.engine.resolve_hosts(named, provider)) if named else {}
        by_id: dict[str, Host] = {}  # each host once, in the order given
        for ref in refs:
            host = ref if isinstance(ref, Host) else found[ref]
            assert host is not None
            by_id.setdefault(host.id, host)
        hosts = list(by_id.values())
        results, ready = [], []
        for host in hosts:
            try:
                if host.state in (HostState.STOPPED, HostState.STOPPING, HostState.FAILED):
                    raise MngrError(
                        f"host is {host.state}; start it first: mngr host start {host.ref}"
                    )
                self.engine.backend(host.provider).require(Capability.EXEC, host)
                ready.append(host)
            except MngrError as exc:
                results.append(provision.HostResult(host, error=str(exc)))
        if ready:
            results += provision.run(
                ready,
                deploy,
                dict(data or {}),
                dry_run=dry_run,
                jobs=self.engine.jobs,
                config_file=self.config_file,
            )
        order = {h.id: i for i, h in enumerate(hosts)}
        return sorted(results, key=lambda r: order[r.host.id])

    @property
    def config_file(self) -> str | None:
        """The `--config` file, for a process of ours (pyinfra) that loads the same settings."""
        given = [layer.path for layer in self.settings.layers if layer.label == "--config"]
        return str(given[0].resolve()) if given and given[0] is not None else None

    def provision_created(
        self, hosts: list[Host], deploy: str, *, destroy_on_failure: bool
    ) -> tuple[list[ProvisionResult], list[Host]]:
        """`create --provision`: the deploy on the hosts just made. A host that fails is
        destroyed (`destroy_on_failure`) or kept and tagged; its result's `fate` says which.
        Returns the results and the hosts that still exist."""
        from mngr.provision import DESTROYED

        results = self.provision(list(hosts), deploy)
        for result in results:
            if result.error is not None:
                result.fate = self.after_failed_provision(result.host, destroy=destroy_on_failure)
        gone = {r.host.id for r in results if r.fate == DESTROYED}
        return results, [h for h in hosts if h.id not in gone]

    def hosts_left_by_removing(self, names: list[str], *, force: bool) -> list[Host]:
        """`provider remove`: the hosts the named providers have, which removing them would
        leave running and unlisted. Refused (ConflictError) when there are any, or when a
        provider cannot tell, unless `force`. A name not configured has none."""
        left: list[Host] = []
        for name in names:
            try:
                hosts = self.hosts_of_provider(name)
            except NotFoundError:
                hosts = []  # not configured: removing it says so, naming the file
            except MngrError as exc:
                if not force:
                    raise type(exc)(f"{exc}; remove it anyway with --force") from None
                hosts = []
            if hosts and not force:
                refs = ", ".join(h.name for h in hosts)
                raise ConflictError(
                    f"provider {name!r} has {len(hosts)} host(s): {refs}; destroy them first, "
                    "or pass --force to leave them running and unlisted"
                )
            left += hosts
        return left

    def after_failed_provision(self, host: Host, *, destroy: bool) -> str:
        """What becomes of a host whose provisioning failed at create: destroyed, or kept and
        tagged `mngr.provisioned=failed` (where its backend can change tags)."""
        from mngr.names import PROVISIONED_TAG
        from mngr.provision import DESTROYED

        try:
            if destroy:
                self.run_one(self.prepare_on_hosts("destroy", [host.id], host.provider))
                return DESTROYED
            tag = {PROVISIONED_TAG: "failed"}
            self.run_one(self.prepare_tag(host.id, tag, provider=host.provider, own=True))
        except UnsupportedError as exc:
            return f"kept, not tagged: {exc}"
        except MngrError as exc:
            return f"kept; could not {'destroy' if destroy else 'tag'} it: {exc}"
        return f"kept, tagged {PROVISIONED_TAG}=failed"

    def inventory(
        self, providers: list[str] | None = None, tags: dict[str, str | None] | None = None
    ) -> Inventory:
        """The running hosts as an inventory (groups per provider and per tag), from list."""
        from mngr.inventory import Inventory

        listing = self.list_hosts(providers, tags=tags)
        return Inventory.of(listing.hosts, listing.errors)

    def _running(self, ref: str, provider: str | None) -> Host:
        host = self.engine.resolve_host(ref, provider)
        if host.state in (HostState.STOPPED, HostState.STOPPING, HostState.FAILED):
            raise MngrError(
                f"host {host.name!r} is {host.state}; start it first: mngr host start {host.ref}"
            )
        return host

    # --- snapshots ----------------------------------------------------------------------

    def prepare_snapshot(self, ref: str, provider: str | None, name: str | None) -> Batch:
        from mngr.names import check_snapshot_name

        host = self.engine.resolve_host(ref, provider)
        backend = self.engine.backend(host.provider)
        backend.require(Capability.SNAPSHOT, host)
        if name:
            check_snapshot_name(name)
            taken = [s for s in self.engine.list_snapshots([host.provider])[0] if s.name == name]
            taken = [s for s in taken if s.host in (host.name, host.id)]
            if taken:
                raise ConflictError(
                    f"host {host.ref!r} already has a snapshot named {name!r} ({taken[0].id}): "
                    "choose another name, or delete it first: mngr host snapshot delete "
                    f"{taken[0].id}"
                )
        else:
            stamp = utc_now().replace(":", "").replace("-", "").lower()
            name = f"{host.name}-{stamp}"[:63]
        plan = backend.snapshot_create_plan(host, name)
        return Batch([Job(host.ref, backend, plan, host=host)])

    def list_snapshots(
        self, providers: list[str] | None = None, host: str | None = None
    ) -> tuple[list[Snapshot], list[ProviderErrorRow]]:
        """Snapshots, of one host when given (matched by name or id: they outlive hosts)."""
        from mngr.names import split_host_ref

        if host is not None:
            key, ref_provider = split_host_ref(host)
            if ref_provider:
                providers = [ref_provider]
            snaps, errors = self.engine.list_snapshots(providers or None)
            snaps = [s for s in snaps if key in (s.host, s.id)]
            if not snaps and not errors and not self._host_exists(key, providers):
                raise NotFoundError(f"no host {host!r} and no snapshots of one")
            return snaps, errors
        return self.engine.list_snapshots(providers or None)

    def _host_exists(self, key: str, providers: list[str] | None) -> bool:
        """True also when a provider cannot tell: that is no reason to say it does not."""
        listing = self.engine.list_hosts(providers or None)
        return bool(listing.errors) or any(key in (h.name, h.id) for h in listing.hosts)

    def prepare_snapshot_delete(self, refs: list[str], provider: str | None = None) -> Batch:
        """Plans to delete snapshots; one that does not resolve, or that a host runs from (a
        docker image its container uses), is refused."""
        batch = Batch()
        hosts: dict[str, list[Host]] = {}  # per provider: one listing, however many snapshots
        for ref in refs:
            try:
                snap = self.engine.resolve_snapshot(ref, provider)
                backend = self.engine.backend(snap.provider)
                if backend.hosts_pin_snapshots:
                    if snap.provider not in hosts:
                        hosts[snap.provider] = self.hosts_of_provider(snap.provider)
                    users = _users(snap, hosts[snap.provider])
                    if users:
                        raise ConflictError(
                            f"snapshot {snap.id} ({snap.name}) is used by host "
                            f"{', '.join(users)}: destroy that host first"
                        )
                plan = backend.snapshot_delete_plan(snap)
            except MngrError as exc:
                batch.refused.append((ref, exc))
                continue
            batch.jobs.append(Job(snap.id, backend, plan, snapshot=snap))
        return batch

    def create_host(
        self, name: str, *, host_id: str | None = None, provider: str | None = None, **how: Any
    ) -> Host:
        """One host, made once per `host_id`: a repeat (a retry of a create whose answer was
        lost) waits for the first to end and gets its host back; the id with another name is
        a conflict. `how` as for `prepare_create`."""
        if host_id is None:
            return self.run_one(self.prepare_create([name], provider=provider, **how))
        mine = threading.Event()
        with self._creating_lock:
            running = self._creating.setdefault(host_id, mine)
        while running is not mine:
            running.wait()
            with self._creating_lock:
                running = self._creating.setdefault(host_id, mine)
        try:
            provider = provider or self.settings.default_provider
            [(_, made)] = self.engine.resolve_hosts([host_id], provider, missing_ok=True)
            if made is not None:
                if made.name != name:
                    raise ConflictError(f"host id {host_id} belongs to host {made.ref}")
                return made
            return self.run_one(
                self.prepare_create([name], provider=provider, host_ids=[host_id], **how)
            )
        finally:
            with self._creating_lock:
                del self._creating[host_id]
            mine.set()

    def wait_for_create(self, ref: str) -> None:
        """If `ref` is a host id being created here, wait until that create ends: the undo of
        a create whose answer never arrived must find the host it made."""
        with self._creating_lock:
            running = self._creating.get(ref)
        if running is not None:
            running.wait()

    def refreshed(self, host: Host) -> Host:
        """The host as its provider reports it now (after stop/start), or as it was."""
        try:
            return self.engine.resolve_host(host.id, host.provider)
        except MngrError:
            return host  # the verb succeeded; only the re-read did not

    # --- garbage --------------------------------------------------------------------------

    def prepare_gc(
        self,
        providers: list[str] | None = None,
        *,
        snapshots: bool = False,
        older_than_s: float | None = None,
    ) -> tuple[GcReport, Batch]:
        """What each provider holds that no host owns (see mngr.gc), and a batch of plans that
        delete those the rules let go, one plan per orphan."""
        from datetime import UTC, datetime

        from mngr.engine import error_row
        from mngr.fanout import fan_out
        from mngr.gc import reason_to_keep

        report, batch = GcReport(), Batch()
        looked: list[str] = []
        for name in self.engine.usable_providers(providers):
            backend = self.engine.backend(name)
            reason = backend.unsupported.get(Capability.GC)
            if reason is None:
                looked.append(name)
            elif providers:
                backend.require(Capability.GC)  # named: refused with the reason
            else:
                report.skipped[name] = reason
        outcomes = fan_out(
            lambda p: self.engine.backend(p).find_orphans(),
            looked,
            jobs=max(len(looked), 1),
            deadline_s=self.engine.deadline(looked),
        )
        now = datetime.now(UTC)
        for outcome in outcomes:
            if outcome.error is not None:
                report.errors.append(error_row(outcome.item, outcome.error))
                continue
            backend = self.engine.backend(outcome.item)
            for orphan in outcome.value:
                keep = reason_to_keep(
                    orphan,
                    deadline_s=backend.create_deadline_s,
                    snapshots=snapshots,
                    older_than_s=older_than_s,
                    now=now,
                )
                if keep is not None:
                    report.kept.append((orphan, keep))
                    continue
                report.delete.append(orphan)
                plan = backend.orphan_delete_plan(orphan)
                batch.jobs.append(Job(f"{orphan.kind} {orphan.id}", backend, plan))
        return report, batch

    # --- running ------------------------------------------------------------------------

    def run(self, batch: Batch) -> list[Outcome]:
        """Run every job's plan (concurrently, at most `jobs` at once), then each of `then`
        whose host's job succeeded: one outcome per job of `batch.all_jobs`. Nothing runs
        while an item is refused (its error is raised)."""
        batch.check()
        outcomes = self._run_jobs(batch.jobs)
        done = {id(j.host) for j, o in zip(batch.jobs, outcomes, strict=True) if o.error is None}
        ready = [job for job in batch.then if id(job.host) in done]
        ran = dict(zip(map(id, ready), self._run_jobs(ready), strict=True))
        for job in batch.then:
            skipped = MngrError(f"kept: host {job.host.ref if job.host else '?'} was not destroyed")
            outcomes.append(ran.get(id(job)) or Outcome(job.label, error=skipped))
        return outcomes

    def _run_jobs(self, jobs: list[Job]) -> list[Outcome]:
        if not jobs:
            return []
        work = [(job.backend, job.plan) for job in jobs]
        return self.engine.run_plans(work, [job.label for job in jobs])

    def run_one(self, batch: Batch) -> Any:
        """Run a batch of one job (and what follows it): its result, or the first error."""
        outcomes = self.run(batch)
        failed = [o.error for o in outcomes if o.error is not None]
        if failed:
            raise failed[0]
        return outcomes[0].value


def _users(snapshot: Snapshot, hosts: list[Host]) -> list[str]:
    """The hosts that run from `snapshot` (their image is it), where that pins it."""
    return [h.ref for h in hosts if h.image in (snapshot.handle, snapshot.id)]
