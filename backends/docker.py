"""Docker backend: a host is a container, and the container's labels are its only record.

One provider instance drives one Docker daemon through the `docker` CLI (`--host` or
`--context`). A host is the container `<name>.<provider>`, so the daemon itself refuses a
second host of one name; it runs `sleep infinity` under Docker's init, so `stop` is quick.
A host with an idle timeout runs mngr's idle watcher (mngr.idle) instead: the container
exits once the host has been idle that long, and its health check prints the last activity.

    container labels   mngr.kind=host, mngr.provider, mngr.host-id, mngr.host-name,
                       mngr.created-at, mngr.cpus/memory/gpus, mngr.idle-timeout
                       (seconds; empty: never), mngr.tags (all tags as
                       JSON: read back exactly) and mngr.tag.<key> (for `docker ps --filter`)
    snapshots          `docker commit` -> mngr-snapshot:<snap-id>, mngr.kind=snapshot
    built images       `--build` -> mngr-build:<host-id>, mngr.kind=build

A host's `address` holds `container` (its name), `container_id`, `docker_state` (docker's own
word: a `paused` container is listed as stopped, and `start` unpauses it) and `docker_host` or
`docker_context` when the provider names one. Its `handle` is the container id.

`--memory 2g` reaches docker as `--memory 2147483648b`: sizes are core's, in bytes.
`list` is one `docker ps` whatever the number of hosts: a template prints each container
as a JSON line, reading every label by its key.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from mngr import idle, resources
from mngr.backend import (
    ArgvValue,
    Backend,
    Capability,
    CreateOptions,
    CreateRequest,
    Orphan,
    ProviderConfig,
    shell_exec,
)
from mngr.errors import (
    ConfigError,
    ConflictError,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UsageError,
    VendorCommandError,
    VendorOutputError,
    exit_status,
    has_url_password,
)
from mngr.names import new_snapshot_id
from mngr.plan import Context, Plan, Step
from mngr.records import Host, HostState, Resources, Snapshot, utc_now
from mngr.runner import Command, Runner
from mngr.toolkit import vendor_json
from mngr.toolkit.argv import Argv
from mngr.toolkit.rules import Rule, classify
from mngr.toolkit.vendor_json import Lenient

KIND = "mngr.kind"
PROVIDER = "mngr.provider"
HOST_ID = "mngr.host-id"
HOST_NAME = "mngr.host-name"
CREATED_AT = "mngr.created-at"
TAGS = "mngr.tags"
TAG_PREFIX = "mngr.tag."
LIMIT_PREFIX = "mngr."  # mngr.cpus, mngr.memory, mngr.gpus: the docker limits asked for
SNAPSHOT_ID = "mngr.snapshot-id"
SNAPSHOT_NAME = "mngr.snapshot-name"
IDLE_TIMEOUT = "mngr.idle-timeout"

SNAPSHOT_REPO = "mngr-snapshot"
BUILD_REPO = "mngr-build"
# Exit codes of a keep-alive ended from outside: clean, SIGKILL, SIGTERM, daemon shutdown.
STOPPED_EXIT_CODES = {0, 137, 143, 255}
DOCKER_STATES = {"created": HostState.BUILDING, "running": HostState.RUNNING,
                 "restarting": HostState.RUNNING, "paused": HostState.STOPPED,
                 "removing": HostState.DESTROYED, "dead": HostState.FAILED}  # fmt: skip
HOST_SCHEMES = ("unix://", "tcp://", "ssh://")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `docker ps` prints one JSON object a line holding just what a Host needs. Labels are read
# one by one (`.Label "key"`): the `.Labels` column joins them with commas, ambiguously.
PS_LABELS = (KIND, HOST_ID, HOST_NAME, CREATED_AT, TAGS, "mngr.cpus", "mngr.memory", "mngr.gpus",
             IDLE_TIMEOUT)  # fmt: skip
PS_FORMAT = (
    '{"ID":{{json .ID}},"Names":{{json .Names}},"State":{{json .State}},'
    '"Status":{{json .Status}},"Image":{{json .Image}},"CreatedAt":{{json .CreatedAt}},'
    '"Labels":{' + ",".join(f'"{key}":{{{{json (.Label "{key}")}}}}' for key in PS_LABELS) + "}}"
)
# Without a terminal, `docker exec` does not pass Ctrl-C on: the process it started keeps
# running in the container. Each such exec carries a marker in its environment, and this
# script ($1) ends every process that has it: SIGINT, then SIGTERM, then SIGKILL, 1 s apart.
EXEC_MARKER = "MNGR_EXEC"
END_MARKED = (
    "for sig in INT TERM KILL; do found=; for f in /proc/[0-9]*/environ; do "
    'if grep -q "' + EXEC_MARKER + '=$1" "$f" 2>/dev/null; then p=${f#/proc/}; '
    'kill -$sig "${p%/environ}" 2>/dev/null && found=1; fi; done; '
    '[ -z "$found" ] && exit 0; sleep 1; done'
)

# The idle watcher's health check (its output: the last activity) of each container, a line each.
HEALTH_FORMAT = '{"Id":{{json .Id}},"Health":{{json .State.Health}}}'
SHELL = "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"


class DockerConfig(ProviderConfig):
    needs_trust = frozenset({"host", "context", "binary", "start_args"})

    host: str | None = None  # docker --host: unix://PATH, tcp://HOST:PORT, ssh://USER@HOST[:PORT]
    context: ArgvValue | None = None  # docker --context, instead of host
    binary: str = "docker"
    image: ArgvValue = "debian:bookworm-slim"  # when `create` gets no --image
    network: ArgvValue | None = None
    start_args: list[str] = Field(default_factory=list)  # extra `docker run` arguments
    build_timeout_s: float = 1800.0  # for build, run (may pull) and commit

    @field_validator("host")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(HOST_SCHEMES):
            raise ValueError(f"host must start with one of {', '.join(HOST_SCHEMES)}")
        return value

    @field_validator("context")
    @classmethod
    def _host_or_context(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("host") is not None:
            raise ValueError("set either 'host' or 'context', not both")
        return value


class DockerCreateOptions(CreateOptions):
    env: list[str] = Field(
        default_factory=list,
        description="KEY=VALUE in the container's environment (repeatable; sent on stdin).",
    )
    # Options that reach the Docker host's own filesystem or raw docker flags are refused
    # through `mngr serve` ("serve": False): a remote caller must not get root on the server.
    volume: list[ArgvValue] = Field(
        default_factory=list,
        description="Mount SRC:DEST[:OPTS] (repeatable; docker --volume).",
        json_schema_extra={"serve": False},
    )
    build: ArgvValue | None = Field(
        None,
        description="Build the image from this directory first.",
        json_schema_extra={"serve": False},
    )
    dockerfile: ArgvValue | None = Field(
        None,
        description="Dockerfile to build (alone: its folder is the build context).",
        json_schema_extra={"serve": False},
    )
    build_arg: list[str] = Field(
        default_factory=list,
        description="KEY=VALUE build argument, or a '-'-flag passed to docker build as-is.",
        json_schema_extra={"short": "-b", "serve": False},
    )
    start_arg: list[str] = Field(
        default_factory=list,
        description="One extra docker run argument, as-is (repeatable; use --flag=value).",
        json_schema_extra={"short": "-s", "serve": False},
    )

    @field_validator("env")
    @classmethod
    def _env_pairs(cls, items: list[str]) -> list[str]:
        for item in items:
            key, eq, value = item.partition("=")
            if not eq or not ENV_KEY_RE.fullmatch(key):
                raise ValueError(f"expected KEY=VALUE, got {item.split('=')[0]!r}...")
            if any(c in value for c in "\n\r\0"):
                raise ValueError(f"the value of {key} must be one line")
        return items


# --- vendor JSON ----------------------------------------------------------------------------


class _PsRow(Lenient):
    id: str = Field(alias="ID")
    names: str = Field("", alias="Names")
    state: str = Field("unknown", alias="State")
    status: str = Field("", alias="Status")
    image: str | None = Field(None, alias="Image")
    labels: dict[str, str] = Field(default_factory=dict, alias="Labels")
    created_at: str | None = Field(None, alias="CreatedAt")


class _ImageConfig(Lenient):
    labels: dict[str, str] | None = Field(None, alias="Labels")


class _HealthRun(Lenient):
    exit_code: int | None = Field(None, alias="ExitCode")
    output: str = Field("", alias="Output")


class _Health(Lenient):
    log: list[_HealthRun] | None = Field(None, alias="Log")


class _HealthRow(Lenient):
    id: str = Field(alias="Id")
    health: _Health | None = Field(None, alias="Health")

    @property
    def last_activity(self) -> str | None:
        """What the watcher's last passing health check printed, as UTC ISO 8601."""
        runs = [r for r in (self.health.log or []) if r.exit_code == 0] if self.health else []
        return idle.epoch_text(runs[-1].output) if runs else None


class _Image(Lenient):
    id: str = Field(alias="Id")
    created: str | None = Field(None, alias="Created")
    size: int | None = Field(None, alias="Size")
    repo_tags: list[str] = Field(default_factory=list, alias="RepoTags")
    config: _ImageConfig = Field(default_factory=_ImageConfig, alias="Config")


class _Engine(Lenient):
    version: str | None = Field(None, alias="Version")
    api_version: str | None = Field(None, alias="ApiVersion")
    os: str | None = Field(None, alias="Os")
    arch: str | None = Field(None, alias="Arch")


class _Version(Lenient):
    server: _Engine | None = Field(None, alias="Server")
    client: _Engine | None = Field(None, alias="Client")


def _host_state(state: str, status: str) -> HostState:
    if state == "exited":
        code = re.match(r"Exited \((-?\d+)\)", status)
        stopped = code is None or int(code.group(1)) in STOPPED_EXIT_CODES
        return HostState.STOPPED if stopped else HostState.FAILED
    return DOCKER_STATES.get(state, HostState.UNKNOWN)


def _docker_time(text: str | None) -> str | None:
    """docker's times (`2026-03-01 10:00:00 +0000 UTC`, `2026-03-01T10:00:00.123456789Z`)
    as UTC ISO 8601 to the second, or None."""
    if not text:
        return None
    match = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)\S*(?: ([+-]\d{4}))?", text)
    if match is None:
        return None
    day, clock, offset = match.groups()
    if offset in (None, "+0000"):
        return f"{day}T{clock}Z"
    return f"{day}T{clock}{offset[:3]}:{offset[3:]}"


def _memory_gb(label: str | None) -> float | None:
    """The memory label in GiB: bytes (`2147483648b`), or a docker size (`256m`) on hosts
    made before sizes were core's."""
    if label and re.fullmatch(r"\d+b?", label):
        return int(label.rstrip("b")) / 2**30
    try:
        return resources.parse_size(label, "--memory") / 2**30 if label else None
    except UsageError:
        return None


def _gpus(value: str | None) -> int | str | None:
    return (int(value) if value.isdigit() else value) if value else None


def _tags(labels: dict[str, str]) -> dict[str, str]:
    """User tags, from the one JSON label: exact, and never inherited from a snapshot image
    (a committed image carries its host's mngr.tag.* labels along)."""
    try:
        tags = json.loads(labels.get(TAGS) or "{}")
    except ValueError:
        return {}
    if isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values()):
        return tags
    return {}


# --- spec: the docker commands of one provider, and the parsers of their output, pure ------


@dataclass(frozen=True)
class DockerSpec:
    config: DockerConfig

    @property
    def base(self) -> Argv:
        c = self.config
        return Argv([c.binary]).add("--host", c.host).add("--context", c.context)

    def _docker(self, *words: str) -> Argv:
        return self.base.words(words)

    def _filtered(self, *words: str, **labels: str | None) -> Argv:
        """`docker <words> --filter label=K=V ...`, this provider's, skipping None values."""
        pairs = {PROVIDER: self.config.name, **labels}
        filters = [f"label={k}={v}" for k, v in pairs.items() if v is not None]
        return self._docker(*words).add("--filter", filters)

    @property
    def endpoint(self) -> dict[str, str]:
        if self.config.host:
            return {"docker_host": self.config.host}
        return {"docker_context": self.config.context} if self.config.context else {}

    def container_name(self, host_name: str) -> str:
        # `.` is in neither host nor provider names, so the pair reads back unambiguously.
        return f"{host_name}.{self.config.name}"

    @staticmethod
    def limits(request: CreateRequest) -> dict[str, str | None]:
        """The core resources as docker's `--cpus`, `--memory` (bytes) and `--gpus` values."""
        res = request.resources
        if res.gpu_type is not None:
            raise UsageError(f"--gpu {res.gpu}: docker takes a count or 'all', not a GPU type")
        return {
            "cpus": None if res.cpus is None else f"{res.cpus:g}",
            "memory": None if res.memory_bytes is None else f"{res.memory_bytes}b",
            "gpus": res.gpu,
        }

    def host_labels(self, request: CreateRequest) -> dict[str, str]:
        tags = json.dumps(request.tags, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return {
            KIND: "host",
            PROVIDER: self.config.name,
            HOST_ID: request.host_id,
            HOST_NAME: request.name,
            CREATED_AT: request.created_at,
            TAGS: tags,
            **{TAG_PREFIX + key: value for key, value in request.tags.items()},
            # Always set, empty when not asked for: a snapshot image carries its host's labels.
            **{LIMIT_PREFIX + key: v or "" for key, v in self.limits(request).items()},
            IDLE_TIMEOUT: str(request.idle_timeout_s or ""),
        }

    @staticmethod
    def build_tag(host_id: str) -> str:
        return f"{BUILD_REPO}:{host_id}"

    @staticmethod
    def snapshot_ref(snap_id: str) -> str:
        return f"{SNAPSHOT_REPO}:{snap_id}"

    def build_argv(self, request: CreateRequest, opts: DockerCreateOptions) -> Argv:
        labels = {
            KIND: "build",
            PROVIDER: self.config.name,
            HOST_ID: request.host_id,
            HOST_NAME: request.name,
        }
        return (
            self._docker("build", "--force-rm")  # a failed build leaves no container behind
            .add("--tag", self.build_tag(request.host_id))
            .add("--label", [f"{k}={v}" for k, v in labels.items()])
            .add("--file", opts.dockerfile)
            .add("--build-arg", [a for a in opts.build_arg if not a.startswith("-")])
            .words(a for a in opts.build_arg if a.startswith("-"))
            .words([opts.build or os.path.dirname(opts.dockerfile or "") or "."])
        )

    def run_argv(self, request: CreateRequest, image: str, opts: DockerCreateOptions) -> Argv:
        timeout = request.idle_timeout_s or 0
        # The first process: the idle watcher (the container exits once idle), or a sleep.
        first = idle.watcher_argv(timeout) if timeout else ["sleep", "infinity"]
        poll = f"{idle.poll_s(timeout)}s"
        return (
            self._docker("run", "--detach", "--init")
            .add("--name", self.container_name(request.name))
            .add("--hostname", request.name)
            .add("--label", [f"{k}={v}" for k, v in self.host_labels(request).items()])
            .add("--network", self.config.network)
            .add_all(self.limits(request))
            .add("--env-file", "/dev/stdin" if opts.env else None)
            .add("--volume", opts.volume)
            .words([*self.config.start_args, *opts.start_arg])
            .add("--health-cmd", idle.READ_LAST_ACTIVITY if timeout else None)
            .add_all({"health-interval": poll, "health-retries": "1"} if timeout else {})
            .add("--entrypoint", first[0])
            .words([image, *first[1:]])
        )

    @staticmethod
    def env_file(opts: DockerCreateOptions) -> str | None:
        """`--env` values go to `docker run --env-file /dev/stdin`: never in argv."""
        return "".join(item + "\n" for item in opts.env) if opts.env else None

    def ps_argv(self) -> Argv:
        ps = self._filtered("ps", "--all", "--no-trunc", **{KIND: "host"})
        return ps.add("--format", PS_FORMAT)

    def all_containers_argv(self) -> Argv:
        """Every container of this provider, whatever its labels say (for gc)."""
        return self._filtered("ps", "--all", "--no-trunc").add("--format", PS_FORMAT)

    def all_images_argv(self) -> Argv:
        """Every image of this provider: snapshots and `--build` images (for gc)."""
        return self._filtered("image", "ls", "--quiet", "--no-trunc")

    def by_host_id_argv(self, host_id: str) -> Argv:
        """Ids of this provider's containers labelled with one host id, in any state."""
        return self._filtered("ps", "--all", "--quiet", "--no-trunc", **{HOST_ID: host_id})

    def rm_argv(self, container: str, *, force: bool) -> Argv:
        return self._docker("rm").add("--force", force).words(["--volumes", container])

    def stop_argv(self, container: str) -> Argv:
        return self._docker("stop", container)

    def start_argv(self, container: str, *, paused: bool = False) -> Argv:
        # A container paused behind mngr's back is listed as stopped; `start` refuses it.
        return self._docker("unpause" if paused else "start", container)

    def commit_argv(self, container: str, host: Host, snap_id: str, name: str, at: str) -> Argv:
        labels = {
            KIND: "snapshot",
            PROVIDER: self.config.name,
            SNAPSHOT_ID: snap_id,
            SNAPSHOT_NAME: name,
            HOST_ID: host.id,
            HOST_NAME: host.name,
            CREATED_AT: at,
        }
        change = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in labels.items())
        return self._docker(
            "commit", "--change", "LABEL " + change, container, self.snapshot_ref(snap_id)
        )

    def images_argv(self, host_id: str | None = None) -> Argv:
        return self._filtered(
            "image", "ls", "--quiet", "--no-trunc", **{KIND: "snapshot", HOST_ID: host_id}
        )

    def image_inspect_argv(self, ids: list[str]) -> Argv:
        return self._docker("image", "inspect", *ids)

    def rename_argv(self, container: str, new_name: str) -> Argv:
        return self._docker("rename", container, new_name)

    def rmi_argv(self, image: str) -> Argv:
        return self._docker("rmi", image)

    def exec_argv(
        self, container: str, argv: list[str], *, tty: bool, detach: bool, marker: str = ""
    ) -> Argv:
        """`marker`: set as MNGR_EXEC in the process's environment (its children inherit it),
        so `end_argv` can find what this exec started."""
        mode = ("--detach",) if detach else ("--interactive", "--tty")[: 2 if tty else 1]
        env = ("--env", f"{EXEC_MARKER}={marker}") if marker else ()
        return self._docker("exec", *mode, *env, container, *argv)

    def copy_out_argv(self, container: str, path: str, folder: str) -> Argv:
        """`path` (absolute) into the local `folder`, through the engine's archive API."""
        return self._docker("cp", f"{container}:{path}", folder)

    def copy_in_argv(self, container: str, path: str, folder: str) -> Argv:
        """The local `path` (absolute), or for `-` the tar archive on stdin, into `folder`
        (absolute), through the engine's archive API."""
        return self._docker("cp", path, f"{container}:{folder}")

    def end_argv(self, container: str, marker: str) -> Argv:
        """Interrupt, then terminate, then kill every process carrying the exec's marker."""
        return self._docker("exec", container, "sh", "-c", END_MARKED, "mngr-end", marker)

    def shell_argv(self, container: str, *, tty: bool) -> Argv:
        return self.exec_argv(container, ["sh", "-c", SHELL], tty=tty, detach=False)

    def health_argv(self, containers: list[str]) -> Argv:
        return self._docker("container", "inspect", "--format", HEALTH_FORMAT, *containers)

    def version_argv(self) -> Argv:
        return self._docker("version", "--format", "{{json .}}")

    @staticmethod
    def parse_ids(stdout: str) -> list[str]:
        return list(dict.fromkeys(line.strip() for line in stdout.splitlines() if line.strip()))

    @staticmethod
    def parse_container_id(stdout: str) -> str:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        if not lines or not re.fullmatch(r"[0-9a-f]{64}", lines[-1]):
            raise VendorOutputError(f"`docker run` printed no container id: {stdout[:200]!r}")
        return lines[-1]

    def parse_hosts(self, stdout: str) -> list[Host]:
        rows = vendor_json.parse_many(_PsRow, stdout, "docker ps")
        # Without both labels a container was labelled by hand, not made by mngr.
        return [self.host(r) for r in rows if r.labels.get(HOST_ID) and r.labels.get(HOST_NAME)]

    def host(self, row: _PsRow) -> Host:
        """The record of a container, read from its labels alone (create reads back the
        labels it wrote, so its record is the one `list` shows)."""
        labels = row.labels
        cpus = labels.get(LIMIT_PREFIX + "cpus")
        idle_timeout = labels.get(IDLE_TIMEOUT) or ""
        return Host(
            id=labels[HOST_ID],
            name=labels[HOST_NAME],
            provider=self.config.name,
            backend=DockerBackend.name,
            state=_host_state(row.state, row.status),
            image=row.image,
            created_at=labels.get(CREATED_AT) or None,
            tags=_tags(labels),
            resources=Resources(
                cpus=float(cpus) if cpus else None,
                memory_gb=_memory_gb(labels.get(LIMIT_PREFIX + "memory")),
                gpus=_gpus(labels.get(LIMIT_PREFIX + "gpus")),
            ),
            idle_timeout_s=int(idle_timeout) if idle_timeout.isdigit() else None,
            address={
                "container": row.names,
                "container_id": row.id,
                "docker_state": row.state,
                **self.endpoint,
            },
            handle=row.id,
        )

    def parse_snapshots(self, stdout: str) -> list[Snapshot]:
        snaps = []
        for image in vendor_json.parse_many(_Image, stdout, "docker image inspect"):
            labels = image.config.labels or {}
            if SNAPSHOT_ID in labels:
                created = image.created[:19] + "Z" if image.created else None  # drop the ns
                snaps.append(
                    Snapshot(
                        id=labels[SNAPSHOT_ID],
                        name=labels.get(SNAPSHOT_NAME, labels[SNAPSHOT_ID]),
                        host=labels.get(HOST_NAME, ""),
                        provider=self.config.name,
                        created_at=labels.get(CREATED_AT) or created,
                        handle=self.snapshot_ref(labels[SNAPSHOT_ID]),
                    )
                )
        return sorted(snaps, key=lambda s: (s.created_at or "", s.id))

    def parse_version(self, stdout: str) -> dict[str, Any]:
        version = vendor_json.parse(_Version, stdout, "docker version")
        server, client = version.server, version.client
        return {
            "reachable": server is not None,
            "server_version": server and server.version,
            "api_version": server and server.api_version,
            "os_arch": f"{server.os}/{server.arch}" if server else None,
            "client_version": client and client.version,
            **self.endpoint,
        }


# --- docker's stderr ------------------------------------------------------------------------

# Lines docker prints around the one that says what went wrong.
_NOISE = ("DEPRECATED:", "Install the buildx", "https://docs.docker.com/go/buildx", "WARNING:",
          "See 'docker", "Run 'docker", "Unable to find image")  # fmt: skip


def telling_line(stderr: str, *, last: bool = False) -> str:
    """The line of docker's stderr that says what went wrong, without docker's prefixes."""
    lines = [line.strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_NOISE)]
    if not lines:
        return "no error text"
    line = lines[-1] if last else lines[0]
    # An ssh:// daemon that cannot be reached: ssh's own words say why, not docker's URL.
    _, sep, ssh_said = line.partition(": stderr=")
    if sep and ssh_said.strip():
        return ssh_said.strip()[:300]
    for prefix in ("docker: ", "Error response from daemon: ", "Error: "):
        line = line.removeprefix(prefix)
    return line[:300]


# First match wins; `say` may use {detail} (the telling line), {where} and {provider}.
# fmt: off
RULES = [
    Rule("permission denied while trying to connect", UnauthorisedError,
         say="not allowed to use the Docker daemon at {where} (add the user to the 'docker' "
             "group, or set 'host'): {detail}"),
    Rule(r"Permission denied \(publickey", UnauthorisedError,
         say="ssh refused the login to {where}: {detail}"),
    # A pull that failed (once the pull worked, what failed is something else).
    Rule(r"(?s)^(?!.*Status: Downloaded newer image).*?Unable to find image '([^']+)' locally",
         NotFoundError,
         say="image {0!r} is not on the Docker host and could not be pulled: {detail}"),
    Rule(r'container name "/([^".]+)\.[^"]*" is already in use', ConflictError,
         say="host {0!r} already exists in provider {provider!r}"),
    Rule("You cannot remove a running container", ConflictError,
         say="the host is running: stop it first, or pass --force"),
    Rule(r"(?s)conflict: unable to.*is using its referenced image", ConflictError,
         say="a host still uses this image (destroy it first): {detail}"),
    Rule(r"No such (container|object|image)", NotFoundError),
    # Another destroy of this host got there first: for destroy, the host is gone.
    Rule(r"removal of container \S+ is already in progress", NotFoundError,
         say="another call is already removing the container: {detail}"),
    Rule(r"docker endpoint: context .*(does not exist|not found)", ConfigError,
         say="provider {provider!r}: {detail}"),
    Rule("Cannot connect to the Docker daemon|error during connect", UnreachableError,
         say="cannot reach the Docker daemon at {where}: {detail}"),
]
# fmt: on


# --- the backend ----------------------------------------------------------------------------


class DockerBackend(Backend):
    name = "docker"
    config_model = DockerConfig
    create_options_model = DockerCreateOptions
    takes = frozenset({resources.CPUS, resources.MEMORY, resources.GPU})
    unsupported = {
        Capability.TAGS: (
            "a host's tags are its container's labels, which docker cannot change once the "
            "container exists; give them with --tag at create"
        ),
    }
    hosts_pin_snapshots = True

    config: DockerConfig

    def __init__(self, config: ProviderConfig, runner: Runner) -> None:
        super().__init__(config, runner)
        self.spec = DockerSpec(self.config)

    def _cmd(self, argv: list[str], *, slow: bool = False, stdin: str | None = None) -> Command:
        if not (self.config.host or self.config.context):
            # docker would echo pieces of it in its own errors (`invalid port ":S3c"`).
            if has_url_password(os.environ.get("DOCKER_HOST", "")):
                raise ConfigError(
                    "DOCKER_HOST holds a password inside a URL; mngr will not pass it on: "
                    "use ssh:// with an ssh key, or tcp:// with TLS certificates"
                )
        timeout = self.config.build_timeout_s if slow else self.config.timeout_s
        return Command(argv, timeout_s=timeout, stdin=stdin)

    def _where(self) -> str:
        if self.config.host:
            return self.config.host
        if self.config.context:
            return f"context {self.config.context!r}"
        return os.environ.get("DOCKER_HOST") or "the default endpoint"

    def classify(self, error: VendorCommandError) -> MngrError:
        verb = error.argv[len(self.spec.base)] if len(error.argv) > len(self.spec.base) else ""
        detail = telling_line(error.stderr, last=verb == "build")
        error.message = f"docker {verb} failed ({exit_status(error.returncode)}): {detail}"
        return classify(error, RULES, detail=detail, where=self._where(), provider=self.provider)

    def list_hosts(self) -> list[Host]:
        hosts = self.spec.parse_hosts(self.run(self._cmd(self.spec.ps_argv())).stdout)
        self._read_last_activity([h for h in hosts if h.idle_timeout_s and h.handle])
        return hosts

    def _read_last_activity(self, hosts: list[Host]) -> None:
        """One inspect of every container with an idle watcher: the last activity its health
        check printed. Best effort: a container gone since `ps` leaves it unknown."""
        if not hosts:
            return
        argv = self.spec.health_argv([h.handle for h in hosts if h.handle])
        done = self.runner.run(self._cmd(argv), check=False)
        rows = {}
        for line in done.stdout.splitlines():
            try:
                row = vendor_json.parse(_HealthRow, line, "docker container inspect")
            except MngrError:
                continue
            rows[row.id] = row.last_activity
        for host in hosts:
            host.last_activity_at = rows.get(host.handle or "")

    def create_plan(self, request: CreateRequest) -> Plan:
        opts = request.options
        if not isinstance(opts, DockerCreateOptions):
            opts = DockerCreateOptions()
        building = bool(opts.build or opts.dockerfile)
        if sum(map(bool, (request.image, building, request.from_snapshot))) > 1:
            raise UsageError(
                "--image, --build/--dockerfile and --from-snapshot exclude one another"
            )
        if opts.build_arg and not building:
            raise UsageError("--build-arg needs --build or --dockerfile")
        if opts.build and not os.path.isdir(opts.build):
            raise UsageError(f"--build: {opts.build!r} is not a directory")
        if opts.dockerfile and not os.path.isfile(opts.dockerfile):
            raise UsageError(f"--dockerfile: {opts.dockerfile!r} is not a file")

        steps = []
        name = self.spec.container_name(request.name)
        if building:
            image = self.spec.build_tag(request.host_id)
            build = self._cmd(self.spec.build_argv(request, opts), slow=True)
            steps.append(Step(f"build image {image}", command=build, undo=self._rmi_step(image)))
        elif request.from_snapshot is not None:
            image = request.from_snapshot.handle or self.spec.snapshot_ref(request.from_snapshot.id)
        else:
            image = request.image or self.config.image

        def remember_id(stdout: str, ctx: Context) -> None:
            ctx["container_id"] = self.spec.parse_container_id(stdout)

        run = self.spec.run_argv(request, image, opts)
        steps.append(
            Step(
                f"run container {name}",
                command=self._cmd(run, slow=True, stdin=self.spec.env_file(opts)),
                parse=remember_id,
                # `docker run` may create the container and then fail to start it, or time out.
                undo_if_failed=True,
                undo=Step(
                    f"remove the container this create made ({HOST_ID}={request.host_id})",
                    action=lambda ctx: self._remove_labelled(request.host_id),
                ),
            )
        )

        return Plan(steps, finish=self._started(request, name, image))

    def _started(self, request: CreateRequest, name: str, image: str) -> Any:
        """A plan's finish: the host its container (`ctx["container_id"]`) now runs."""
        labels = self.spec.host_labels(request)

        def finish(ctx: Context) -> Host:
            row = _PsRow(
                id=ctx["container_id"], names=name, state="running", image=image, labels=labels
            )
            return self.spec.host(row)

        return finish

    def _remove_labelled(
        self, host_id: str, *, keep: str | None = None, only: str | None = None
    ) -> None:
        """Undo `docker run`: remove the containers labelled with this host id (`only` this
        one when the run printed its id), never `keep` and never by name (the name may be
        another host's, or a container mngr never made)."""
        if only is None:
            found = self.run(self._cmd(self.spec.by_host_id_argv(host_id)), cancellable=False)
            made = [c for c in self.spec.parse_ids(found.stdout) if c != keep]
        else:
            made = [only]
        for container_id in made:
            try:
                self.run(self._cmd(self.spec.rm_argv(container_id, force=True)), cancellable=False)
            except NotFoundError:
                pass  # already gone

    def _container(self, host: Host) -> str:
        return host.handle or self.spec.container_name(host.name)

    def _rmi_step(self, image: str) -> Step:
        rmi = self._cmd(self.spec.rmi_argv(image))
        return Step(f"remove image {image}", command=rmi, missing_ok=True)

    def destroy_plan(self, host: Host, *, force: bool = False) -> Plan:
        """A running host is stopped first (its processes get SIGTERM and docker's grace
        time), as on every backend a running host is destroyed without --force; `force` kills
        it at once instead (`docker rm --force`)."""
        container = self._container(host)
        rm = self._cmd(self.spec.rm_argv(container, force=force))
        name = self.spec.container_name(host.name)
        steps = []
        if not force and host.state != HostState.STOPPED:
            stop = self._cmd(self.spec.stop_argv(container))
            steps.append(Step(f"stop container {name}", command=stop, missing_ok=True))
        steps.append(Step(f"remove container {name}", command=rm, missing_ok=True))
        if host.image == self.spec.build_tag(host.id):
            steps.append(self._rmi_step(host.image))
        return Plan(steps)

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        steps = []
        if snapshot:
            stamp = utc_now().replace("-", "").replace(":", "").lower()
            steps += self.snapshot_create_plan(host, f"{host.name}-stop-{stamp}").steps
        container = self._container(host)
        steps.append(Step(f"stop {container}", command=self._cmd(self.spec.stop_argv(container))))
        return Plan(steps)

    def start_plan(self, host: Host) -> Plan:
        container = self._container(host)
        paused = host.address.get("docker_state") == "paused"
        argv = self.spec.start_argv(container, paused=paused)
        return Plan([Step(f"start {container}", command=self._cmd(argv))])

    def restore_plan(self, host: Host, snapshot: Snapshot) -> Plan:
        """A new container from the snapshot's image, with the host's labels and limits (and
        the provider's network and start_args; --env/--volume given at create are not kept).
        The old container is set aside under another name and removed once the new one runs."""
        old = host.handle
        if not old:
            raise MngrError(f"host {host.name!r} has no container id")
        name = self.spec.container_name(host.name)
        aside = f"{name}.replaced-{old[:12]}"
        image = snapshot.handle or self.spec.snapshot_ref(snapshot.id)
        res = host.resources
        request = CreateRequest(
            name=host.name,
            host_id=host.id,
            created_at=host.created_at or utc_now(),
            tags=host.tags,
            resources=resources.ResourceRequest(
                cpus=res.cpus,
                memory_bytes=round(res.memory_gb * 2**30) if res.memory_gb else None,
                gpu=str(res.gpus) if res.gpus else None,
            ),
            idle_timeout_s=host.idle_timeout_s or 0,
        )
        steps = []
        if host.state == HostState.RUNNING:
            start = Step(f"start {old} again", command=self._cmd(self.spec.start_argv(old)))
            steps.append(
                Step(f"stop {name}", command=self._cmd(self.spec.stop_argv(old)), undo=start)
            )
        rename_back = Step(
            f"rename {old} back to {name}", command=self._cmd(self.spec.rename_argv(old, name))
        )
        steps += [
            Step(
                f"rename {name} to {aside}",
                command=self._cmd(self.spec.rename_argv(old, aside)),
                undo=rename_back,
            ),
            Step(
                f"run a container {name} from {image}",
                command=self._cmd(
                    self.spec.run_argv(request, image, DockerCreateOptions()), slow=True
                ),
                parse=lambda out, ctx: ctx.update(container_id=self.spec.parse_container_id(out)),
                undo_if_failed=True,
                undo=Step(
                    f"remove the new container of {host.name} (never {old})",
                    action=lambda ctx: self._remove_labelled(
                        host.id, keep=old, only=ctx.get("container_id")
                    ),
                ),
            ),
            Step(
                f"remove the old container {old}",
                command=self._cmd(self.spec.rm_argv(old, force=True)),
                missing_ok=True,
            ),
        ]

        return Plan(steps, finish=self._started(request, name, image))

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        snap_id, created = new_snapshot_id(), utc_now()
        ref = self.spec.snapshot_ref(snap_id)
        argv = self.spec.commit_argv(self._container(host), host, snap_id, name, created)
        # An interrupted commit may still finish on the daemon: remove what it made.
        step = Step(
            f"commit {host.name} to {ref}",
            command=self._cmd(argv, slow=True),
            undo=self._rmi_step(ref),
            undo_if_failed=True,
        )
        snapshot = Snapshot(
            id=snap_id,
            name=name,
            host=host.name,
            provider=self.provider,
            created_at=created,
            handle=ref,
        )
        return Plan([step], finish=lambda ctx: snapshot)

    def _inspect_images(self, argv: list[str]) -> str:
        """One inspect of many images; one deleted since `ls` drops out, not the rest."""
        done = self.runner.run(self._cmd(argv), check=False)
        if done.returncode == 0:
            return done.stdout
        error = self.classify(VendorCommandError(argv, done.returncode, done.stdout, done.stderr))
        if isinstance(error, NotFoundError) and done.stdout.lstrip().startswith("["):
            return done.stdout
        raise error

    def list_snapshots(self, host: Host | None = None) -> list[Snapshot]:
        argv = self.spec.images_argv(host.id if host else None)
        ids = self.spec.parse_ids(self.run(self._cmd(argv)).stdout)
        if not ids:
            return []
        return self.spec.parse_snapshots(self._inspect_images(self.spec.image_inspect_argv(ids)))

    def snapshot_delete_plan(self, snapshot: Snapshot) -> Plan:
        return Plan([self._rmi_step(snapshot.handle or self.spec.snapshot_ref(snapshot.id))])

    # --- garbage ----------------------------------------------------------------------

    @property
    def create_deadline_s(self) -> float:
        return 2 * self.config.build_timeout_s + self.config.timeout_s  # build, run, a look

    def find_orphans(self) -> list[Orphan]:
        """Three calls whatever the number of hosts: every container and every image of this
        provider (by its mngr.provider label), and one inspect of those images."""
        out = self.run(self._cmd(self.spec.all_containers_argv())).stdout
        rows = vendor_json.parse_many(_PsRow, out, "docker ps")
        owners = {r.labels.get(HOST_ID) for r in rows}
        in_use = {r.image for r in rows}
        orphans = []
        for row in rows:
            labels = row.labels
            if not (labels.get(KIND) == "host" and labels.get(HOST_ID) and labels.get(HOST_NAME)):
                why = "a container without mngr's complete label set (not made by a create)"
            elif row.state == "created":
                why = "a container a create made but never started (the create was stopped)"
            else:
                continue
            orphans.append(
                Orphan(
                    id=row.id,
                    kind="container",
                    provider=self.provider,
                    why=why,
                    name=row.names,
                    created_at=_docker_time(row.created_at),
                )
            )
        ids = self.spec.parse_ids(self.run(self._cmd(self.spec.all_images_argv())).stdout)
        if not ids:
            return orphans
        images = self._inspect_images(self.spec.image_inspect_argv(ids))
        for image in vendor_json.parse_many(_Image, images, "docker image inspect"):
            labels = image.config.labels or {}
            if labels.get(HOST_ID) in owners or in_use & {image.id, *image.repo_tags}:
                continue
            kind = labels.get(KIND)
            if kind == "snapshot":
                why = f"a snapshot of host {labels.get(HOST_NAME)!r}, which no longer exists"
            elif kind == "build":
                why = (
                    f"built by --build for host {labels.get(HOST_NAME)!r}, which no container uses"
                )
            else:
                continue
            orphans.append(
                Orphan(
                    id=image.id,
                    kind="image",
                    provider=self.provider,
                    why=why,
                    name=image.repo_tags[0] if image.repo_tags else None,
                    created_at=labels.get(CREATED_AT) or _docker_time(image.created),
                    size_bytes=image.size,
                    snapshot=kind == "snapshot",
                )
            )
        return orphans

    def orphan_delete_plan(self, orphan: Orphan) -> Plan:
        if orphan.kind == "container":
            rm = self._cmd(self.spec.rm_argv(orphan.id, force=True))
            return Plan([Step(f"remove container {orphan.name}", command=rm, missing_ok=True)])
        return Plan([self._rmi_step(orphan.name or orphan.id)])

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        container = self._container(host)
        if not detach:  # a detached command comes wrapped in a shell already (Service)
            argv = shell_exec(argv)
        if tty or detach:  # a terminal passes Ctrl-C on; a detached process is meant to stay
            return Command(self.spec.exec_argv(container, argv, tty=tty, detach=detach))
        marker = secrets.token_hex(8)
        return Command(
            self.spec.exec_argv(container, argv, tty=False, detach=False, marker=marker),
            on_interrupt=Command(self.spec.end_argv(container, marker), timeout_s=30),
        )

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        return Command(self.spec.shell_argv(self._container(host), tty=tty))

    def copy_out_command(self, host: Host, path: str, folder: str) -> Command:
        return self._cmd(self.spec.copy_out_argv(self._container(host), path, folder))

    def copy_in_command(self, host: Host, path: str, folder: str) -> Command:
        return self._cmd(self.spec.copy_in_argv(self._container(host), path, folder))

    def check(self) -> dict[str, Any]:
        return self.spec.parse_version(self.run(self._cmd(self.spec.version_argv())).stdout)
