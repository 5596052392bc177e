"""The backend contract. A backend module in `backends/` subclasses `Backend` and declares:

- `config_model`: its provider settings (pydantic, unknown keys refused);
- `create_options_model`: its provider-specific `host create` flags;
- `unsupported`: each capability it lacks, with a human reason (and, per host, the
  `unsupported` of the `Host` records it returns: a spot instance cannot stop);
- `takes`: the core resources (`--cpus`, `--memory`, `--disk`, `--gpu`) it can honour;
- the verbs, as argv-building plans and parsers run through the injected runner.

A backend never prints, reads settings files or parses CLI flags.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from mngr.errors import MngrError, UnsupportedError, UsageError, VendorCommandError
from mngr.names import not_a_flag
from mngr.plan import Plan
from mngr.records import Host, Snapshot
from mngr.resources import ResourceRequest, parse_idle_timeout
from mngr.runner import Command, Completed, Runner

if TYPE_CHECKING:
    from mngr.forward import Dial
    from mngr.toolkit.ssh import SshEndpoint


def shell_exec(argv: list[str]) -> list[str]:
    """`argv` run through `/bin/sh -c 'exec "$@"'` (arguments stay arguments, never shell
    text), so that on every backend a command that is not found exits 127 and one found but
    not executable 126, as in a shell (docker exec itself says 126 for both)."""
    return ["/bin/sh", "-c", 'exec "$@"', "mngr-exec", *argv]


def _idle_timeout(value: Any) -> int:
    try:
        return parse_idle_timeout(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


# `idle_timeout = "30m"` in settings: seconds once read; 0 is never.
IdleTimeout = Annotated[int, BeforeValidator(_idle_timeout)]

# A setting or option that reaches a vendor's argv as a value: refused when it starts with '-'.
ArgvValue = Annotated[str, AfterValidator(not_a_flag)]


class Capability(StrEnum):
    CREATE = "create"
    STOP_START = "stop/start"
    SNAPSHOT = "snapshot"
    EXEC = "exec"
    TAGS = "tags"  # change a host's tags after create (`host tag`)
    RESTORE = "restore"  # start a host from a chosen snapshot (`host start --snapshot`)
    GC = "gc"  # find and remove what mngr made that no host owns any more
    IDLE_STOP = "idle-stop"  # stop by itself after `--idle-timeout` without activity

    @property
    def verb(self) -> str:
        """The capability as the verb of "cannot ...": `cannot change tags`."""
        return _VERBS.get(self, self.value)


_VERBS = {
    Capability.TAGS: "change tags",
    Capability.RESTORE: "start from a chosen snapshot",
    Capability.GC: "collect orphans",
    Capability.IDLE_STOP: "stop a host when it is idle",
}


class ProviderConfig(BaseModel):
    """Settings of one provider instance. Backends subclass it with their own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Keys that decide where a credential goes or which program runs: a project settings
    # file (from a cloned repository, say) may set them only once the user trusts it.
    needs_trust: ClassVar[frozenset[str]] = frozenset()

    name: str
    backend: str
    # A vendor call's deadline: 0, a negative number, inf or nan would time every call out
    # at once (or never), so only a positive finite number is accepted.
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    # false: kept in settings, skipped by list and refused by verbs. Strict: "no" or 0 used to
    # pass as false here but count as enabled where the raw settings are read.
    enabled: StrictBool = True
    # The default `host create --idle-timeout` of this provider's hosts (mngr.idle).
    idle_timeout: IdleTimeout = 0


class CreateOptions(BaseModel):
    """Provider-specific `host create` flags. Each field becomes `--field-name`.

    Field metadata (`json_schema_extra`): `flag` overrides the long flag, `short` adds a
    short one (e.g. "-b"); `serve: False` makes `mngr serve` refuse the option from remote
    callers (it acts on the server's own machine: mounts, build contexts, as-is vendor flags).
    """

    # Built on first use: only `host create` validates options, yet every backend module
    # (imported to validate its settings) declares a model.
    model_config = ConfigDict(extra="forbid", defer_build=True)


@dataclass
class CreateRequest:
    name: str
    host_id: str
    created_at: str
    image: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    from_snapshot: Snapshot | None = None
    options: CreateOptions | None = None
    resources: ResourceRequest = field(default_factory=ResourceRequest)
    # Stop by itself after this long without activity; 0: never; None: not given (a remote
    # server's provider then applies its own `idle_timeout` setting).
    idle_timeout_s: int | None = None

    def __post_init__(self) -> None:
        # Checked here once for every front end (CLI, server, API), before any vendor call.
        if self.image is not None:
            try:
                not_a_flag(self.image)
            except ValueError as exc:
                raise UsageError(f"--image: {exc}") from None


@dataclass
class Listing:
    """What a pool lists when some of it answered: the hosts (or snapshots) it could read,
    and one error for each part that failed (a machine that is down). `list_hosts` and
    `list_snapshots` return it instead of a plain list when anything failed."""

    items: list[Any] = field(default_factory=list)
    errors: list[MngrError] = field(default_factory=list)


@dataclass
class Orphan:
    """Something a provider holds that mngr made and that no host owns any more: what
    `mngr gc` lists and, when asked, deletes (by `Backend.orphan_delete_plan`)."""

    id: str  # the backend's own id of it: a container id, an AMI id, a path
    kind: str  # what it is, in the vendor's words: container, image, ami, ebs-snapshot, folder
    provider: str
    why: str  # why no host owns it
    name: str | None = None  # how a person knows it (an image tag, a host name), when it differs
    created_at: str | None = None  # UTC ISO 8601; unknown: gc keeps it (it cannot tell its age)
    size_bytes: int | None = None
    snapshot: bool = False  # a snapshot of a destroyed host: kept unless asked for


class Backend(ABC):
    name: ClassVar[str]
    config_model: ClassVar[type[ProviderConfig]] = ProviderConfig
    create_options_model: ClassVar[type[CreateOptions]] = CreateOptions
    unsupported: ClassVar[dict[Capability, str]] = {}
    # The core resources (mngr.resources.CPUS, MEMORY, DISK, GPU) this backend can honour.
    takes: ClassVar[frozenset[str]] = frozenset()
    # Its hosts are parts of this machine (local: a folder): a command in one runs as mngr's
    # own user here, so `mngr serve` runs none for a token holder unless told to.
    on_this_machine: ClassVar[bool] = False
    # The settings file this provider came from, to name in "set X in FILE" hints.
    origin: str | None = None
    # Names in a host's working folder that hold mngr's own state: push never writes or
    # deletes them.
    transfer_protected: ClassVar[tuple[str, ...]] = ()
    # Its hosts' idle clocks are reset where they are served (a remote `mngr serve` does it
    # before each exec, shell, push, pull and forward), not by this mngr beforehand.
    resets_idle_clock_itself: ClassVar[bool] = False
    # A snapshot cannot be deleted while a host runs from it (a docker image a container
    # uses; such a host's `image` is the snapshot's handle): destroy --purge keeps it, and
    # snapshot delete refuses it, naming the host.
    hosts_pin_snapshots: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig, runner: Runner) -> None:
        self.config = config
        self.runner = runner

    @property
    def provider(self) -> str:
        return self.config.name

    # --- capabilities -----------------------------------------------------------------

    @classmethod
    def require(cls, capability: Capability, host: Host | None = None) -> None:
        """Refuse what this backend, or this one host of it, cannot do, with the reason."""
        reason = cls.unsupported.get(capability)
        if reason is not None:
            raise UnsupportedError(f"backend '{cls.name}' cannot {capability.verb}: {reason}")
        reason = host.unsupported.get(str(capability)) if host is not None else None
        if reason is not None:
            raise UnsupportedError(f"host {host.ref!r} cannot {capability.verb}: {reason}")

    @classmethod
    def require_resources(cls, resources: ResourceRequest) -> None:
        for name in resources.given():
            if name not in cls.takes:
                raise UsageError(f"--{name} is not supported by backend '{cls.name}'")

    @classmethod
    def status_note(cls, config: ProviderConfig) -> str | None:
        """How this provider is set up, when a user should know ("without a token"):
        `provider list` shows it after "configured"."""
        return None

    @classmethod
    def shared_state_key(cls, config: ProviderConfig) -> str | None:
        """Where this provider keeps its hosts, when two providers with equal keys would see
        and destroy each other's hosts (settings naming both are refused); None: never."""
        return None

    # --- running vendor commands ------------------------------------------------------

    def run(self, command: Command, *, cancellable: bool = True) -> Completed:
        try:
            return self.runner.run(command, cancellable=cancellable)
        except VendorCommandError as exc:
            raise self.classify(exc) from exc

    def classify(self, error: VendorCommandError) -> MngrError:
        """Turn a failed vendor command into a specific error (not found, unauthorised...)."""
        return error

    # --- verbs ------------------------------------------------------------------------

    @abstractmethod
    def list_hosts(self) -> list[Host] | Listing: ...

    @abstractmethod
    def create_plan(self, request: CreateRequest) -> Plan: ...

    @abstractmethod
    def destroy_plan(self, host: Host, *, force: bool = False) -> Plan: ...

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        self.require(Capability.STOP_START)
        raise NotImplementedError

    def start_plan(self, host: Host) -> Plan:
        self.require(Capability.STOP_START)
        raise NotImplementedError

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        self.require(Capability.SNAPSHOT)
        raise NotImplementedError

    def list_snapshots(self, host: Host | None = None) -> list[Snapshot] | Listing:
        if Capability.SNAPSHOT in self.unsupported:
            return []
        raise NotImplementedError

    def snapshot_delete_plan(self, snapshot: Snapshot) -> Plan:
        self.require(Capability.SNAPSHOT)
        raise NotImplementedError

    def tag_plan(self, host: Host, tags: dict[str, str], remove: list[str]) -> Plan:
        """Set `tags` and remove the keys `remove` on the host (both validated by core)."""
        self.require(Capability.TAGS, host)
        raise NotImplementedError

    def restore_plan(self, host: Host, snapshot: Snapshot) -> Plan:
        """Start the host (same name and id) with its filesystem as `snapshot` holds it."""
        self.require(Capability.RESTORE, host)
        raise NotImplementedError

    # --- garbage ----------------------------------------------------------------------

    @property
    def create_deadline_s(self) -> float:
        """How long a create of this provider may still be running: gc never touches a
        resource younger than this (it may be a concurrent create's)."""
        return self.config.timeout_s * 3

    def find_orphans(self) -> list[Orphan]:
        """What this provider holds with mngr's marker that no host owns (a snapshot of a
        destroyed host, what a killed create left). Never anything without the marker."""
        self.require(Capability.GC)
        raise NotImplementedError

    def orphan_delete_plan(self, orphan: Orphan) -> Plan:
        """Delete one orphan this provider found, by its id."""
        self.require(Capability.GC)
        raise NotImplementedError

    def touch_plan(self, host: Host) -> Plan | None:
        """`host touch` done by the provider (a remote server's API); None: mngr runs
        mngr.idle.TOUCH_ARGV in the host over the transport."""
        return None

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        """The command that runs `argv` on the host, with stdio passed through."""
        self.require(Capability.EXEC)
        raise NotImplementedError

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        self.require(Capability.EXEC)
        raise NotImplementedError

    def local_folder(self, host: Host) -> str | None:
        """The host's working folder when it is a folder on this machine: push and pull then
        run rsync on it directly instead of through `exec_command` (measured 5x faster)."""
        return None

    def copy_out_command(self, host: Host, path: str, folder: str) -> Command | None:
        """For a pull by tar: a command copying `path` (absolute, in the host; a link itself,
        not followed; `X/.`: X's contents) into the local `folder` under its own name, keeping
        modes, mtimes and links, owned by the user running it (`docker cp C:PATH FOLDER`),
        faster than `tar -c` over `exec_command`; None: this backend has none."""
        return None

    def ssh_endpoint(self, host: Host) -> SshEndpoint | None:
        """The host's own ssh address (ssh pool, aws), which `host ssh-config` writes and
        `host forward` tunnels through; None: this backend has none. Raises a MngrError
        saying why when the backend has one but this host cannot give it (no address)."""
        return None

    def port_command(self, host: Host, port: int) -> Command | None:
        """For `host forward` without an ssh endpoint: a command whose stdin and stdout are
        one connection to 127.0.0.1:`port` inside the host, over the transport (`nc` there);
        None: the host's ports are this machine's own."""
        self.require(Capability.EXEC, host)
        return self.exec_command(host, ["nc", "127.0.0.1", str(port)])

    def copy_in_command(self, host: Host, path: str, folder: str) -> Command | None:
        """For a push by tar: a command copying the local `path` (absolute; `X/.`: X's
        contents) into `folder` (absolute, existing, in the host) under its own name, keeping
        modes, mtimes and links (`docker cp PATH C:FOLDER`), or for `-` unpacking the tar
        archive on its stdin there (`docker cp - C:FOLDER`), faster than `tar -x` over
        `exec_command`; None: this backend has none."""
        return None

    def port_channel(self, host: Host, port: int) -> Dial | None:
        """For `host forward`: how to open one connection to 127.0.0.1:`port` inside the host
        from mngr's own process, no process started per connection (a WebSocket through a
        mngr server); None: `port_command` is the way."""
        return None

    def check(self) -> dict[str, Any]:
        """One cheap call proving the provider is reachable; returns facts to show."""
        return {"reachable": True}
