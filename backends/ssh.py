"""SSH pool backend: a host is one machine of a configured pool, claimed over `ssh`.

Layout on each machine, under `host_dir` (default `~/.mngr`):

    claim/              exists <=> the machine is claimed: `mkdir` is the atomic claim
    claim/owner         "<host-id> <name> <provider>" of the claiming host (release checks it)
    claim/host.json     the host record: the only state there is
    claim/pids/         processes started by `host exec --detach` (destroy ends them)
    hosts/<name>/       the host's working directory: commands run here

A host's `address`: `machine` (its name in the pool), `ssh` (`[user@]address:port`) and `dir`
(the host's working directory on the machine). The handle is the machine's name.

Every remote command is `sh -c SCRIPT mngr VALUE...`, passed to ssh as one argv element
after `--`. The scripts are constants of this module; user values reach them only as
positional parameters, each shell-quoted, so the remote shell never interprets a value.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeGuard

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mngr.backend import (
    Backend,
    Capability,
    CreateOptions,
    CreateRequest,
    Listing,
    Orphan,
    ProviderConfig,
)
from mngr.errors import (
    ConflictError,
    InterruptedByUser,
    MngrError,
    UnauthorisedError,
    UnreachableError,
    UsageError,
    VendorCommandError,
    VendorMissingError,
    VendorOutputError,
    did_you_mean,
    exit_status,
    first_line,
    validation_message,
)
from mngr.fanout import fan_out
from mngr.idle import epoch_text
from mngr.names import HOST_ID_RE, HOST_NAME_RE, PROVIDER_NAME_RE, check_host_name
from mngr.plan import Context, Plan, Step
from mngr.records import Host, HostState, changed_tags
from mngr.runner import Command
from mngr.toolkit import ssh
from mngr.toolkit.rules import Rule, classify
from mngr.toolkit.vendor_json import Lenient

# --- configuration ------------------------------------------------------------------------

ADDRESS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:%_-]{0,252}$")  # DNS name, IPv4 or IPv6
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
# What may follow `~/` or `/` in host_dir: plain path characters, nothing a shell expands.
HOST_DIR_RE = re.compile(r"^(~/|/)?[A-Za-z0-9_.+@,/-]+$")


def _checked_host_dir(value: str) -> str:
    parts = [p for p in value.removeprefix("~/").split("/") if p]
    if (
        not HOST_DIR_RE.fullmatch(value)
        or not parts
        or any(p in (".", "..") or p.startswith("-") for p in parts)
    ):
        raise ValueError(
            "use '~/DIR' or '/DIR' of letters, digits and '_.+@,-' (no '..', no part "
            "starting with '-')"
        )
    return value


class Machine(BaseModel):
    """One machine of the pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    address: str
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None  # default: ssh's own (the local user, or ~/.ssh/config)
    identity_file: str | None = None
    host_dir: str | None = None  # default: the provider's host_dir

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not HOST_NAME_RE.fullmatch(value):
            raise ValueError("use 1 to 63 lower-case letters, digits and '-'")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not ADDRESS_RE.fullmatch(value):
            raise ValueError("expected a host name or an IP address")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not USER_RE.fullmatch(value):
            raise ValueError("expected a user name (letters, digits, '_', '.', '-')")
        return value

    @field_validator("identity_file")
    @classmethod
    def _identity(cls, value: str | None) -> str | None:
        return ssh.ssh_file(value, "identity_file")

    @field_validator("host_dir")
    @classmethod
    def _host_dir(cls, value: str | None) -> str | None:
        return None if value is None else _checked_host_dir(value)

    @property
    def target(self) -> ssh.SshTarget:
        return ssh.SshTarget(self.address, self.user, self.port, self.identity_file)

    @property
    def destination(self) -> str:
        """`user@address:port`, for messages."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.address}:{self.port}"


class SshConfig(ProviderConfig):
    needs_trust = frozenset({"machines", "known_hosts", "accept_new", "binary"})

    machines: list[Machine] = Field(min_length=1)
    known_hosts: str | None = None  # default: the user's ~/.ssh/known_hosts
    accept_new: bool = False  # true: StrictHostKeyChecking=accept-new; checking is never off
    host_dir: str = "~/.mngr"
    connect_timeout_s: int = Field(10, ge=1, le=600)
    binary: str = "ssh"
    control_persist_s: int = Field(60, ge=0)  # 0: no connection reuse

    @field_validator("known_hosts")
    @classmethod
    def _known_hosts(cls, value: str | None) -> str | None:
        return ssh.ssh_file(value, "known_hosts")

    @field_validator("host_dir")
    @classmethod
    def _host_dir(cls, value: str) -> str:
        return _checked_host_dir(value)

    @model_validator(mode="after")
    def _unique_machines(self) -> SshConfig:
        names = [m.name for m in self.machines]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"machine names must be unique: {', '.join(twice)} given twice")
        return self


class SshCreateOptions(CreateOptions):
    machine: str | None = Field(
        None, description="Claim this machine of the pool (default: the first free one)."
    )


# --- remote scripts (constants: values arrive only as "$1", "$2", ...) ---------------------

CLAIMED_EXIT = 75  # the claim script's answer for "this machine is already claimed"
CHANGED = "changed"  # the release script's answer for "the claim is another host's now"

# $1 host_dir, $2 host id, $3 name, $4 provider. mkdir succeeds for exactly one claimer.
CLAIM_SCRIPT = (
    'umask 077; mkdir -p -- "$1" && cd -- "$1" || exit 1; '
    'if err=$(mkdir claim 2>&1); then printf "%s %s %s\\n" "$2" "$3" "$4" > claim/owner && exit 0; '
    "rm -f claim/owner; rmdir claim; exit 1; fi; "
    f"if [ -e claim ]; then cat claim/owner 2>/dev/null; exit {CLAIMED_EXIT}; fi; "
    'printf "%s\\n" "$err" >&2; exit 1'
)
# $1 host_dir, $2 host id, $3 name; stdin: the record. Refuses if the claim is not ours.
WRITE_SCRIPT = (
    'umask 077; cd -- "$1" || exit 1; read -r id rest < claim/owner || exit 1; '
    'if [ "$id" != "$2" ]; then echo "the claim is no longer ours" >&2; exit 1; fi; '
    'mkdir -p -- "hosts/$3" && cat > claim/.host.json.tmp && mv -f claim/.host.json.tmp '
    "claim/host.json"
)
# `started PID`: what tells a process from a later one given the same pid (its start time),
# empty when none runs. A detached process's pid file holds it, so release never signals a
# process that merely reuses the pid of one that exited.
STARTED_FUNCTION = (
    'started() { if [ -r "/proc/$1/stat" ]; then sed "s/.*) //" "/proc/$1/stat" | '
    'cut -d" " -f20; else ps -o lstart= -p "$1" 2>/dev/null; fi; }; '
)
# $1 host_dir, $2 host id, $3 name. Only ever touches hosts/$3 and the claim, and only
# while the claim is this host's (another host's: prints CHANGED and the owner's id). The
# rename makes the release atomic. A concurrent release of the same host may take the claim
# away meanwhile: then this one is done too. Never signals pid 0, 1, itself or its parent.
RELEASE_SCRIPT = (
    '[ -d "$1" ] || exit 0; cd -- "$1" || exit 1; [ -f claim/owner ] || exit 0; '
    "read -r id rest < claim/owner || exit 1; "
    f'[ "$id" = "$2" ] || {{ echo "{CHANGED} $id"; exit 0; }}; '
    + STARTED_FUNCTION
    + 'for f in claim/pids/*; do p=${f##*/}; case $p in ""|0*|1|*[!0-9]*) continue;; esac; '
    '[ "$p" = "$$" ] || [ "$p" = "$PPID" ] && continue; s=$(started "$p"); '
    '[ -n "$s" ] && [ "$s" = "$(cat -- "$f")" ] && kill -TERM "$p" 2>/dev/null; done; '
    'rm -rf -- "hosts/$3" || exit 1; '
    'ours() { read -r id rest < claim/owner && [ "$id" = "$1" ]; } 2>/dev/null; '
    'ours "$2" || exit 0; '
    'err=$(mv -- claim ".released-$2" 2>&1) || '
    '{ ours "$2" || exit 0; printf "%s\\n" "$err" >&2; exit 1; }; '
    'rm -rf -- ".released-$2"'
)
# $1 host_dir. Prints the owner line, then the record (if written yet); nothing if free;
# NO_OWNER when `claim` exists without an owner (the claim script then refuses the machine).
NO_OWNER = "?"
READ_SCRIPT = (
    '[ -e "$1" ] || exit 0; cd -- "$1" || exit 1; [ -e claim ] || exit 0; '
    f'[ -s claim/owner ] || {{ echo "{NO_OWNER}"; exit 0; }}; '
    "cat claim/owner && cat claim/host.json 2>/dev/null; exit 0"
)
# $1 host_dir. For gc: one line "DIR MTIME OWNER-LINE" for the claim and for each claim a
# stopped release left (renamed, not yet removed), then RECORD_MARK and the claim's record.
RECORD_MARK = "--record--"
GC_SCRIPT = (
    '[ -d "$1" ] || exit 0; cd -- "$1" || exit 1; '
    'for d in claim .released-*; do [ -d "$d" ] || continue; '
    't=$(date -r "$d/owner" +%s 2>/dev/null || date -r "$d" +%s); '
    'o=; [ -f "$d/owner" ] && read -r o < "$d/owner"; printf "%s %s %s\\n" "$d" "$t" "$o"; done; '
    f"echo {RECORD_MARK}; cat claim/host.json 2>/dev/null; exit 0"
)
# $1 host_dir, $2 host id: remove what a stopped release of that host left.
REMOVE_RELEASED_SCRIPT = 'cd -- "$1" || exit 1; rm -rf -- ".released-$2"'
# $1 host_dir, $2 name, then the command's argv: run without any shell interpretation.
# Not `exec`: a command killed by signal N exits 128+N, as in a shell (ssh says 255).
EXEC_SCRIPT = 'cd -- "$1/hosts/$2" || exit 1; shift 2; "$@"; exit $?'
DETACH_SCRIPT = (
    STARTED_FUNCTION + 'cd -- "$1" || exit 1; c=$(pwd)/claim; cd -- "hosts/$2" || exit 1; shift 2; '
    'mkdir -p -- "$c/pids" || exit 1; nohup "$@" >> "$c/detached.log" 2>&1 < /dev/null & '
    'p=$!; started "$p" > "$c/pids/$p"; echo "started pid $p (log: $c/detached.log)"'
)
SHELL_SCRIPT = 'cd -- "$1/hosts/$2" || exit 1; exec "${SHELL:-/bin/sh}" -l'


def script_command(script: str, *values: str) -> str:
    """The one string the remote login shell parses: `sh -c SCRIPT mngr VALUE...`."""
    return ssh.remote_command(["sh", "-c", script, "mngr", *values])


# --- spec: argv builders and parsers (pure) -----------------------------------------------


@dataclass(frozen=True)
class SshSpec:
    config: SshConfig
    control_dir: str | None  # where ControlMaster sockets live; None: no connection reuse

    def host_dir(self, machine: Machine) -> str:
        return machine.host_dir or self.config.host_dir

    def remote_dir(self, machine: Machine) -> str:
        """host_dir as the remote side sees it: relative to the login directory (home)."""
        return self.host_dir(machine).removeprefix("~/")

    @cached_property
    def settings(self) -> ssh.SshSettings:
        c = self.config
        return ssh.SshSettings(
            binary=c.binary,
            known_hosts=c.known_hosts,
            accept_new=c.accept_new,
            connect_timeout_s=c.connect_timeout_s,
            control_dir=self.control_dir,
            control_persist_s=c.control_persist_s,
        )

    @property
    def known_hosts(self) -> str:
        return self.settings.known_hosts_file

    def argv(
        self, machine: Machine, remote: str, *, tty: bool = False, batch: bool = True
    ) -> list[str]:
        return ssh.ssh_argv(machine.target, self.settings, remote, tty=tty, batch=batch)

    def _command(
        self, machine: Machine, script: str, *values: str, stdin: str | None = None
    ) -> Command:
        argv = self.argv(machine, script_command(script, self.remote_dir(machine), *values))
        return Command(argv, timeout_s=self.config.timeout_s, stdin=stdin)

    @property
    def read_timeout_s(self) -> float:
        """A list of one machine: a connect plus two `cat`s, well inside the provider's."""
        return min(self.config.timeout_s, self.config.connect_timeout_s + 10.0)

    # --- verbs --------------------------------------------------------------------------

    def claim(self, machine: Machine, host_id: str, name: str) -> Command:
        return self._command(
            machine, CLAIM_SCRIPT, _id(host_id), check_host_name(name), self.config.name
        )

    def write_record(self, machine: Machine, record: dict[str, Any]) -> Command:
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        return self._command(
            machine,
            WRITE_SCRIPT,
            _id(record["id"]),
            check_host_name(record["name"]),
            stdin=text,
        )

    def release(self, machine: Machine, host_id: str, name: str) -> Command:
        return self._command(machine, RELEASE_SCRIPT, _id(host_id), check_host_name(name))

    def read(self, machine: Machine) -> Command:
        argv = self.argv(machine, script_command(READ_SCRIPT, self.remote_dir(machine)))
        return Command(argv, timeout_s=self.read_timeout_s)

    def gc_read(self, machine: Machine) -> Command:
        argv = self.argv(machine, script_command(GC_SCRIPT, self.remote_dir(machine)))
        return Command(argv, timeout_s=self.read_timeout_s)

    def remove_released(self, machine: Machine, host_id: str) -> Command:
        return self._command(machine, REMOVE_RELEASED_SCRIPT, _id(host_id))

    def exec(
        self, machine: Machine, name: str, argv: list[str], *, tty: bool, detach: bool
    ) -> Command:
        script = DETACH_SCRIPT if detach else EXEC_SCRIPT
        remote = script_command(script, self.remote_dir(machine), check_host_name(name), *argv)
        return Command(self.argv(machine, remote, tty=tty and not detach, batch=False))

    def shell(self, machine: Machine, name: str, *, tty: bool) -> Command:
        remote = script_command(SHELL_SCRIPT, self.remote_dir(machine), check_host_name(name))
        return Command(self.argv(machine, remote, tty=tty, batch=False))

    # --- parsers ------------------------------------------------------------------------

    def record(self, request: CreateRequest, machine: Machine, provider: str) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "id": request.host_id,
            "name": request.name,
            "provider": provider,
            "machine": machine.name,
            "created_at": request.created_at,
            "tags": request.tags,
        }

    def host(self, machine: Machine, provider: str, record: dict[str, Any]) -> Host:
        name = record["name"]
        return Host(
            id=record["id"],
            name=name,
            provider=provider,
            backend="ssh",
            state=HostState(record.get("state", HostState.RUNNING.value)),
            created_at=record.get("created_at"),
            tags=record.get("tags") or {},
            address={
                "machine": machine.name,
                "ssh": machine.destination,
                "dir": f"{self.host_dir(machine)}/hosts/{name}",
            },
            handle=machine.name,
        )

    def parse_read(self, machine: Machine, provider: str, stdout: str) -> Host | None:
        """READ_SCRIPT's output -> the machine's host, or None when it is free."""
        owner, _, rest = stdout.partition("\n")
        if not owner.strip():
            return None
        if owner.strip() == NO_OWNER:
            raise VendorOutputError(f"machine {machine.name!r}: {self.half_made(machine)}")
        host_id, name, owner_provider = parse_owner(owner)
        if (
            not HOST_ID_RE.fullmatch(host_id)
            or not HOST_NAME_RE.fullmatch(name)
            or not PROVIDER_NAME_RE.fullmatch(owner_provider or provider)
        ):
            raise VendorOutputError(
                f"machine {machine.name!r}: unreadable claim owner {owner.strip()[:80]!r} in "
                f"{self.host_dir(machine)}/claim/owner"
            )
        if not rest.strip():  # claimed, record not written yet: a create in progress
            return self.host(
                machine,
                owner_provider or provider,
                {"id": host_id, "name": name, "state": HostState.BUILDING},
            )
        why = _unreadable(rest)
        if why is not None:
            raise VendorOutputError(
                f"machine {machine.name!r}: unreadable host record "
                f"{self.host_dir(machine)}/claim/host.json: {why}"
            )
        record = ClaimRecord.model_validate_json(rest)
        # Whose host: a machine may be in the pools of several providers.
        owned_by = owner_provider or record.provider or provider
        fields = {"id": host_id, "name": name, "created_at": record.created_at}
        return self.host(machine, owned_by, {**fields, "tags": record.tags or {}})

    def parse_gc(self, machine: Machine, provider: str, stdout: str) -> list[Orphan]:
        """GC_SCRIPT's output -> this provider's claims on the machine that no host owns: a
        claim without a readable record (a create stopped after claiming; a damaged record)
        and a claim a stopped release renamed. Only claims whose owner line names this
        provider: a claim without an owner names none, so it stays (`provider check` names
        it)."""
        claims, _, record = stdout.partition(f"{RECORD_MARK}\n")
        where = self.host_dir(machine)
        orphans = []
        for line in claims.splitlines():
            folder, _, rest = line.partition(" ")
            mtime, _, owner = rest.partition(" ")
            host_id, name, owner_provider = parse_owner(owner)
            if (
                owner_provider != provider
                or not HOST_ID_RE.fullmatch(host_id)
                or not HOST_NAME_RE.fullmatch(name)
            ):
                continue
            if folder == f".released-{host_id}":
                kind = "released claim"
                why = f"{where}/{folder}: the claim of host {name!r}, left by a stopped destroy"
            elif folder != "claim":
                continue
            elif not record.strip():
                kind = "claim"
                why = f"{where}/claim of host {name!r} has no host record: a create was stopped"
            elif (problem := _unreadable(record)) is not None:
                kind = "claim"
                why = f"{where}/claim of host {name!r} has an unreadable host record: {problem}"
            else:
                continue
            orphans.append(
                Orphan(
                    id=f"{machine.name}/{host_id}",
                    kind=kind,
                    provider=provider,
                    why=why,
                    name=name,
                    created_at=epoch_text(mtime),
                )
            )
        return orphans

    def half_made(self, machine: Machine) -> str:
        return (
            f"{self.host_dir(machine)}/claim exists without an owner (a create was interrupted "
            "on the machine, or is claiming it right now); if no create is running, remove "
            "that directory on the machine to free it"
        )

    def machine_of(self, argv: list[str]) -> Machine | None:
        """The machine an ssh argv built here talks to."""
        if "--" not in argv or "-p" not in argv:
            return None
        address = argv[argv.index("--") + 1]
        port = int(argv[argv.index("-p") + 1])
        for machine in self.config.machines:
            if machine.address == address and machine.port == port:
                return machine
        return None

    def classify(self, machine: Machine | None, error: VendorCommandError) -> MngrError:
        """ssh's own failures (exit 255) -> host key / unauthorised / unreachable errors."""
        where = f"machine {machine.name!r} ({machine.destination})" if machine else "machine"
        if error.returncode < 0:  # ssh itself was killed: nothing says how far it got
            return UnreachableError(f"{where}: ssh was {exit_status(error.returncode)}")
        if error.returncode != 255:
            detail = first_line(error.stderr) or f"exit {error.returncode}"
            return MngrError(f"{where}: remote command failed: {detail}")
        last = first_line(_last_lines(error.stderr))
        keygen = ["ssh-keygen", "-R", _known_hosts_name(machine), "-f", self.known_hosts]
        found = classify(
            error,
            SSH_RULES,
            where=where,
            last=last,
            known_hosts=self.known_hosts,
            keygen=shlex.join(keygen),
        )
        return UnreachableError(f"{where}: ssh failed: {last}") if found is error else found


class HostKeyError(MngrError):
    """The machine's host key is unknown or changed: never connected to, never 'fixed' here."""

    kind = "host-key"


class ClaimRecord(Lenient):
    """claim/host.json: the owner line says whose claim it is; this adds the rest."""

    provider: str | None = None
    created_at: str | None = None
    tags: dict[str, str] | None = None

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str | None) -> str | None:
        if value is not None and not PROVIDER_NAME_RE.fullmatch(value):
            raise ValueError("must be a provider name (lower-case letters, digits, '_', '-')")
        return value


# ssh's own failures (exit 255), by what its stderr says; the first match decides.
SSH_RULES = [
    Rule(
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        HostKeyError,
        say="{where}: its host key has CHANGED since it was recorded in {known_hosts}; refusing "
        "to connect. If the machine was reinstalled, check the new key and remove the old one "
        "with {keygen}",
    ),
    Rule(
        "Host key verification failed|host key is known for",
        HostKeyError,
        say="{where}: its host key is unknown (not in {known_hosts}); refusing to connect. Add "
        "the verified key to that file (ssh-keyscan), or set accept_new = true to trust it on "
        "first use",
    ),
    Rule(
        "Permission denied",
        UnauthorisedError,
        say="{where}: not authorised: {last} (check the machine's identity_file and user)",
    ),
    Rule(
        "Connection refused|timed out|No route to host|Network is unreachable|Could not resolve "
        "hostname|Connection closed|Connection reset|kex_exchange_identification",
        UnreachableError,
        say="{where} is unreachable: {last}",
    ),
]


def _unreadable(record: str) -> str | None:
    """Why a claim's host.json is not a host record, or None when it is one."""
    try:
        ClaimRecord.model_validate_json(record)
    except ValidationError as exc:
        problem = exc.errors()[0]  # no key: the text as a whole is not a JSON object
        return validation_message(problem) if problem["loc"] else "not a JSON object"
    return None


def parse_owner(line: str) -> tuple[str, str, str | None]:
    """A claim's owner line -> (host id, name, provider or None: written before it was)."""
    words = line.split()
    if len(words) not in (2, 3):
        return "", "", None
    return words[0], words[1], words[2] if len(words) == 3 else None


def _id(host_id: str) -> str:
    if not HOST_ID_RE.fullmatch(host_id):
        raise UsageError(f"invalid host id {host_id!r}")
    return host_id


def _known_hosts_name(machine: Machine | None) -> str:
    if machine is None:
        return "HOST"
    return machine.address if machine.port == 22 else f"[{machine.address}]:{machine.port}"


def _last_lines(text: str) -> str:
    """ssh's most telling line is its last one (banners and warnings come first)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("@")]
    return lines[-1] if lines else text


# --- the backend --------------------------------------------------------------------------


class SshBackend(Backend):
    name = "ssh"
    config_model = SshConfig
    create_options_model = SshCreateOptions
    unsupported = {
        Capability.IDLE_STOP: (
            "a pool machine is not mngr's to power off, and mngr does not release a claim "
            "on a timer: work of the claimer's may still be on it; 'mngr host destroy' "
            "releases it"
        ),
        Capability.STOP_START: (
            "a pool machine is not mngr's to power off; 'mngr host destroy' releases it to the pool"
        ),
        Capability.SNAPSHOT: (
            "a pool machine's filesystem is the machine's own; mngr can neither capture "
            "nor restore it"
        ),
        Capability.RESTORE: "a pool machine has no snapshots to start from",
    }

    config: SshConfig

    @cached_property
    def spec(self) -> SshSpec:
        reuse = self.config.control_persist_s > 0
        return SshSpec(self.config, ssh.control_dir() if reuse else None)

    def machine(self, name: str) -> Machine:
        for machine in self.config.machines:
            if machine.name == name:
                return machine
        names = [m.name for m in self.config.machines]
        raise UsageError(
            f"provider {self.provider!r} has no machine {name!r}{did_you_mean(name, names)}"
        )

    def classify(self, error: VendorCommandError) -> MngrError:
        return self.spec.classify(self.spec.machine_of(error.argv), error)

    # --- reading the pool ---------------------------------------------------------------

    def _read(self, machine: Machine) -> Host | None:
        out = self.run(self.spec.read(machine)).stdout
        return self.spec.parse_read(machine, self.provider, out)

    def _read_pool(self, machines: list[Machine]) -> list[tuple[Machine, Host | None, Any]]:
        """(machine, its host or None, error or None) for each machine, concurrently."""
        outcomes = fan_out(
            self._read, machines, jobs=len(machines), deadline_s=self.spec.read_timeout_s + 2.0
        )
        result = []
        for outcome in outcomes:
            error = outcome.error
            if isinstance(error, VendorMissingError | InterruptedByUser | KeyboardInterrupt):
                raise error  # ssh itself is missing, or the user gave up: not per machine
            if isinstance(error, MngrError) and not error.message.startswith("machine "):
                error.message = f"machine {outcome.item.name!r}: {error.message}"
            result.append((outcome.item, outcome.value, error))
        return result

    def list_hosts(self) -> list[Host] | Listing:
        pool = self._read_pool(list(self.config.machines))
        hosts = [host for _, host, error in pool if self._owns(host) and error is None]
        errors = [error for _, _, error in pool if error is not None]
        if errors:
            return Listing(hosts, errors)
        return hosts

    # --- verbs --------------------------------------------------------------------------

    def create_plan(self, request: CreateRequest) -> Plan:
        if request.image:
            raise UsageError(
                "--image is not supported by backend 'ssh': a pool machine runs the system it has"
            )
        options = request.options if isinstance(request.options, SshCreateOptions) else None
        chosen = options.machine if options else None
        candidates = [self.machine(chosen)] if chosen else list(self.config.machines)
        name = check_host_name(request.name)

        def claim(ctx: Context) -> None:
            ctx["machine"] = self._claim_first_free(candidates, request, ctx, chosen=bool(chosen))

        def release(ctx: Context) -> None:
            if "machine" in ctx:  # never another host's claim (the script checks the id)
                # An undo runs to its end even after Ctrl-C, which cancels everything else.
                command = self.spec.release(ctx["machine"], request.host_id, name)
                self.run(command, cancellable=False)

        def check_name_unique(ctx: Context) -> None:
            others = [m for m in self.config.machines if m != ctx["machine"]]
            for machine, host, _ in self._read_pool(others):
                if self._owns(host) and host.name == name:
                    raise ConflictError(
                        f"host {name!r} already exists in provider {self.provider!r} "
                        f"(on machine {machine.name!r})"
                    )

        def write_record(ctx: Context) -> None:
            ctx["record"] = self.spec.record(request, ctx["machine"], self.provider)
            self.run(self.spec.write_record(ctx["machine"], ctx["record"]))

        which = chosen or "the first free machine of " + ", ".join(m.name for m in candidates)
        return Plan(
            [
                Step(
                    f"claim {which} for {name} (ssh: mkdir HOST_DIR/claim)",
                    action=claim,
                    undo=Step(f"release the claim of {name}", action=release),
                    undo_if_failed=True,  # an interrupted claim may have happened remotely
                ),
                Step(f"check no other machine holds a host named {name}", action=check_name_unique),
                Step(
                    f"write the host record HOST_DIR/claim/host.json of {name}",
                    action=write_record,
                ),
            ],
            finish=lambda ctx: self.spec.host(ctx["machine"], self.provider, ctx["record"]),
        )

    def _claim_first_free(
        self, candidates: list[Machine], request: CreateRequest, ctx: Context, *, chosen: bool
    ) -> Machine:
        """Try each machine in turn; `mkdir` on the machine decides races."""
        refusals: list[str] = []
        failures: list[MngrError] = []
        for machine in candidates:
            ctx["machine"] = machine  # an interrupt here leaves the undo a machine to check
            done = self.runner.run(
                self.spec.claim(machine, request.host_id, request.name), check=False
            )
            del ctx["machine"]
            if done.returncode == 0:
                return machine
            if done.returncode == CLAIMED_EXIT:
                owner = self._ref(*parse_owner(done.stdout)[1:])
                if chosen:
                    where = f"machine {machine.name!r} of provider {self.provider!r}"
                    raise ConflictError(
                        f"{where} is claimed by host {owner!r}"
                        if owner
                        else f"{where}: {self.spec.half_made(machine)}"
                    )
                why = f"by {owner!r}" if owner else "without an owner (interrupted or starting)"
                refusals.append(f"machine {machine.name!r} is claimed {why}")
                continue
            error = self.classify(
                VendorCommandError(done.argv, done.returncode, done.stdout, done.stderr)
            )
            if chosen:
                raise error
            failures.append(error)
            refusals.append(str(error))
        message = f"no free machine in provider {self.provider!r}: " + "; ".join(refusals)
        kinds = {type(error) for error in failures}
        if len(failures) == len(candidates) and len(kinds) == 1:
            raise kinds.pop()(message)  # every machine refused alike (not authorised: exit 5)
        raise MngrError(message)

    def destroy_plan(self, host: Host, *, force: bool = False) -> Plan:
        machine = self._machine_of(host)
        return Plan(
            [
                Step(
                    f"release machine {machine.name} held by {host.name}",
                    command=self.spec.release(machine, host.id, host.name),
                    parse=lambda out, ctx: self._check_released(host, machine, out),
                )
            ]
        )

    def tag_plan(self, host: Host, tags: dict[str, str], remove: list[str]) -> Plan:
        machine = self._machine_of(host)

        def retag(ctx: Context) -> None:
            now = self._read(machine)  # the record as it is, not as it was listed
            if now is None or now.id != host.id:
                raise ConflictError(
                    f"host {host.name!r} changed since this command looked it up: machine "
                    f"{machine.name!r} no longer holds {host.id}; nothing done"
                )
            request = CreateRequest(
                name=now.name,
                host_id=now.id,
                created_at=now.created_at or "",
                tags=changed_tags(now.tags, tags, remove),
            )
            # The write script checks again, on the machine, that the claim is still this host's.
            self.run(
                self.spec.write_record(machine, self.spec.record(request, machine, self.provider))
            )

        return Plan(
            [Step(f"rewrite the host record of {host.name} on {machine.name}", action=retag)]
        )

    def _check_released(self, host: Host, machine: Machine, out: str) -> None:
        word, _, now = out.strip().partition(" ")
        if word == CHANGED:
            holder = now if HOST_ID_RE.fullmatch(now) else "another host"
            raise ConflictError(
                f"host {host.name!r} changed since this command looked it up: machine "
                f"{machine.name!r} is now held by {holder}, not {host.id}; nothing done"
            )

    # --- garbage ----------------------------------------------------------------------

    def find_orphans(self) -> list[Orphan]:
        """One ssh call per machine, all at once: its claims that name this provider and that
        no host owns (see SshSpec.parse_gc). A machine that cannot be read fails gc of the
        pool: what it holds cannot be judged."""

        def read(machine: Machine) -> list[Orphan]:
            out = self.run(self.spec.gc_read(machine)).stdout
            return self.spec.parse_gc(machine, self.provider, out)

        machines = list(self.config.machines)
        outcomes = fan_out(
            read, machines, jobs=len(machines), deadline_s=self.spec.read_timeout_s + 2.0
        )
        orphans = []
        for outcome in outcomes:
            if outcome.error is not None:
                error = outcome.error
                if isinstance(error, MngrError) and not error.message.startswith("machine "):
                    error.message = f"machine {outcome.item.name!r}: {error.message}"
                raise error
            orphans += outcome.value
        return orphans

    def orphan_delete_plan(self, orphan: Orphan) -> Plan:
        machine_name, _, host_id = orphan.id.partition("/")
        machine = self.machine(machine_name)
        if orphan.kind == "released claim":
            command = self.spec.remove_released(machine, host_id)
            where = f"{self.spec.host_dir(machine)}/.released-{host_id} on {machine.name}"
            return Plan([Step(f"remove {where}", command=command)])
        # The release script frees the claim only while it is still this host id's (another
        # one's now: this one is gone already).
        command = self.spec.release(machine, host_id, check_host_name(orphan.name or ""))
        return Plan([Step(f"release machine {machine.name} from {orphan.name}", command=command)])

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        return self.spec.exec(self._machine_of(host), host.name, argv, tty=tty, detach=detach)

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        return self.spec.shell(self._machine_of(host), host.name, tty=tty)

    def ssh_endpoint(self, host: Host) -> ssh.SshEndpoint:
        return ssh.SshEndpoint(self._machine_of(host).target, self.spec.settings)

    def check(self) -> dict[str, Any]:
        pool = self._read_pool(list(self.config.machines))
        errors = [str(error) for _, _, error in pool if error is not None]
        if errors:
            raise UnreachableError("; ".join(errors))
        claimed = {m.name: self._ref(h.name, h.provider) for m, h, _ in pool if h is not None}
        return {
            "machines": len(pool),
            "free": len(pool) - len(claimed),
            "claimed": claimed,
        }

    def _owns(self, host: Host | None) -> TypeGuard[Host]:
        """Is this host one of this provider's (a machine may be in several pools)?"""
        return host is not None and host.provider == self.provider

    def _ref(self, name: str, provider: str | None) -> str:
        """A host's name as this provider's user knows it: NAME, or NAME.PROVIDER if another's."""
        return name if provider in (None, self.provider) else f"{name}.{provider}"

    def _machine_of(self, host: Host) -> Machine:
        if host.handle is None:
            raise MngrError(f"host {host.name!r} does not say which machine holds it")
        return self.machine(host.handle)
