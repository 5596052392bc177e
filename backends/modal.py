"""Modal backend: a host is a Modal sandbox, driven through our shim over the Modal SDK.

The `modal` CLI cannot create, tag or snapshot sandboxes, so every verb is one call of

    <python> -m mngr_backends.modal_shim VERB --app APP --dict DICT --provider P ...

(backends/modal_shim.py, the only code that imports `modal`): argv in, JSON out, errors as
one JSON object on stderr. The SDK is an optional extra (`mngr[modal]`); `python` in the
provider's settings may name another interpreter that has it (and mngr).

    running host   a sandbox of app APP tagged mngr-host-id, mngr-host-name, mngr-provider,
                   mngr-created-at (+ mngr-image and the resources asked for) and user tags
    stopped host   a record in the modal.Dict DICT: Modal sandboxes cannot be stopped, so
                   stop = snapshot_filesystem + terminate, start = a new sandbox (same name,
                   id and tags) from the host's latest snapshot image
    snapshot       a record in DICT naming the snapshot image (Modal cannot delete an image:
                   `snapshot delete` forgets it and the image expires by Modal's TTL)

Credentials reach the shim through its environment only (MODAL_TOKEN_ID/SECRET from the env
vars named by token_id_env/token_secret_env, MODAL_PROFILE), never argv.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from pydantic import Field, field_validator, model_validator

from mngr import resources
from mngr.backend import ArgvValue, Backend, CreateOptions, CreateRequest, ProviderConfig
from mngr.errors import (
    ConflictError,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UsageError,
    VendorCommandError,
    VendorMissingError,
    VendorOutputError,
    VendorTimeoutError,
    exit_status,
)
from mngr.names import new_snapshot_id
from mngr.plan import Context, Plan, Step
from mngr.records import Host, HostState, Resources, Snapshot, utc_now
from mngr.runner import Command, Completed

SHIM = "mngr_backends.modal_shim"
MODAL_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"


class ModalConfig(ProviderConfig):
    needs_trust = frozenset({"token_id_env", "token_secret_env", "python"})

    # Per shim call. Unreachable, the SDK hangs about a minute; this turns it into an error.
    timeout_s: float = 30.0
    # For create/start (may build an image) and stop/snapshot (snapshots a filesystem).
    long_timeout_s: float = 900.0
    app: str | None = None  # Modal app holding the sandboxes; default mngr-<provider>
    environment: str | None = None  # Modal environment; default: the profile's
    profile: str | None = None  # a profile of ~/.modal.toml (MODAL_PROFILE)
    token_id_env: str | None = None  # name of the env var holding the token id
    token_secret_env: str | None = None  # name of the env var holding the token secret
    python: str | None = None  # interpreter with mngr and modal; default: mngr's own
    image: ArgvValue | None = (
        None  # registry image when create gets no --image; default debian_slim
    )
    region: ArgvValue | None = None  # default --region
    sandbox_timeout_s: int | None = Field(default=None, gt=0)  # default --timeout

    @field_validator("app", "environment")
    @classmethod
    def _modal_name(cls, value: str | None) -> str | None:
        if value is not None and not MODAL_NAME_RE.fullmatch(value):
            raise ValueError("use at most 64 letters, digits, '-', '_' and '.'")
        return value

    @field_validator("token_id_env", "token_secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME_RE.fullmatch(value):
            raise ValueError("must be the name of an environment variable, not a token")
        return value

    @model_validator(mode="after")
    def _token_pair(self) -> ModalConfig:
        if (self.token_id_env is None) != (self.token_secret_env is None):
            raise ValueError("token_id_env and token_secret_env go together: set both or neither")
        return self


class ModalCreateOptions(CreateOptions):
    timeout: int | None = Field(
        None, gt=0, le=86400, description="Modal sandbox lifetime in seconds (Modal's default 300)."
    )
    region: ArgvValue | None = Field(None, description="Modal region(s), comma-separated.")


class ModalBackend(Backend):
    name = "modal"
    config_model = ModalConfig
    create_options_model = ModalCreateOptions
    takes = frozenset({resources.CPUS, resources.MEMORY, resources.GPU})
    # Everything is supported. Modal sandboxes cannot be stopped: stop is snapshot_filesystem
    # then terminate, start a new sandbox from the latest snapshot (see the module docstring).
    unsupported = {}

    config: ModalConfig

    # --- the shim command ---------------------------------------------------------------

    @property
    def python(self) -> str:
        return os.path.expanduser(self.config.python) if self.config.python else sys.executable

    @property
    def app(self) -> str:
        return self.config.app or f"mngr-{self.provider}"[:64]

    @property
    def dict_name(self) -> str:
        return f"{self.app[:56]}-records"

    def shim(self, verb: str, *args: str, long: bool = False) -> Command:
        argv = [self.python, "-m", SHIM, verb, *self._common(), *args]
        timeout = self.config.long_timeout_s if long else self.config.timeout_s
        return Command(argv, timeout_s=timeout, env=self._env())

    def _common(self) -> list[str]:
        return options(
            app=self.app,
            dict=self.dict_name,
            provider=self.provider,
            environment=self.config.environment,
        )

    def _env(self) -> dict[str, str]:
        """Credentials for the shim: environment only, so no argv or error text holds them."""
        env = {}
        if self.config.profile:
            env["MODAL_PROFILE"] = self.config.profile
        if self.config.environment:
            env["MODAL_ENVIRONMENT"] = self.config.environment
        if self.config.token_id_env and self.config.token_secret_env:
            for target, source in (
                ("MODAL_TOKEN_ID", self.config.token_id_env),
                ("MODAL_TOKEN_SECRET", self.config.token_secret_env),
            ):
                value = os.environ.get(source)
                if not value:
                    raise UnauthorisedError(
                        f"provider {self.provider!r} reads its Modal token from ${source}, "
                        f"which is not set; fix: export {self.config.token_id_env} and "
                        f"{self.config.token_secret_env} (`modal token new` creates a token)"
                    )
                env[target] = value
        return env

    def run(self, command: Command, *, cancellable: bool = True) -> Completed:
        try:
            return super().run(command, cancellable=cancellable)
        except VendorMissingError as exc:
            if isinstance(exc.__cause__, OSError):  # the interpreter itself is missing
                raise VendorMissingError(
                    f"Python interpreter {self.python!r} for the Modal shim was not found; "
                    f'install mngr[modal] or set python = "/path/to/python" for provider '
                    f"{self.provider!r}"
                ) from exc
            raise
        except VendorTimeoutError as exc:  # the runner names the interpreter, not the shim
            raise VendorTimeoutError(
                f"modal shim {command.argv[3]} did not answer within {command.timeout_s:g}s"
            ) from exc

    def classify(self, error: VendorCommandError) -> MngrError:
        verb = error.argv[3] if len(error.argv) > 3 else "?"
        report = shim_report(error.stderr)
        if report is None:
            last = last_line(error.stderr)
            if "No module named" in error.stderr and "mngr_backends" in error.stderr:
                return VendorMissingError(
                    f"{self.python} cannot run the Modal shim ({last}); install mngr[modal] "
                    f'for it or set python = "/path/to/python" for provider {self.provider!r}'
                )
            status = exit_status(error.returncode)
            return MngrError(f"modal shim {verb} failed ({status}): {last or 'no error text'}")
        kind = report.get("kind")
        message = str(report.get("message") or "no error text").rstrip(".")
        fix = str(report.get("fix") or "")
        if kind == "unauthorised":
            if self.config.token_id_env:
                fix = (
                    f"check that ${self.config.token_id_env} and ${self.config.token_secret_env} "
                    "hold a valid Modal token (`modal token new` creates one)"
                )
            return UnauthorisedError(
                f"Modal refused provider {self.provider!r}: {message}; fix: {fix}"
            )
        if kind == "vendor-missing":
            return VendorMissingError(f"{message}; fix (provider {self.provider!r}): {fix}")
        if kind == "not-found":
            return NotFoundError(f"modal {verb}: {message}")
        if kind == "conflict":
            return ConflictError(f"modal {verb}: {message}")
        if kind == "unreachable":
            return UnreachableError(f"Modal is unreachable (modal {verb}): {message}")
        return MngrError(f"modal {verb}: {message}")

    def _parse(self, stdout: str, verb: str) -> Any:
        try:
            return json.loads(stdout)
        except ValueError:
            shown = last_line(stdout)[:120] or "nothing"
            raise VendorOutputError(
                f"modal shim {verb} printed unreadable output: {shown!r}"
            ) from None

    def _call(self, command: Command) -> Any:
        return self._parse(self.run(command).stdout, command.argv[3])

    # --- records ------------------------------------------------------------------------

    def _host(self, data: Any, verb: str = "list") -> Host:
        try:
            resources = {k: v for k, v in (data.get("resources") or {}).items() if v is not None}
            sandbox_id = data.get("sandbox_id")
            address = {"app": self.app, "sandbox_id": sandbox_id} if sandbox_id else {}
            return Host(
                id=data["id"],
                name=data["name"],
                provider=self.provider,
                backend=self.name,
                state=HostState(data.get("state", "unknown")),
                image=data.get("image"),
                created_at=data.get("created_at"),
                tags=data.get("tags") or {},
                resources=Resources(**resources),
                address=address,
                snapshots=data.get("snapshots") or [],
                handle=sandbox_id,
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise VendorOutputError(
                f"modal shim {verb} printed an unreadable host: {exc}"
            ) from None

    def _snapshot(self, data: Any, verb: str = "list-snapshots") -> Snapshot:
        try:
            return Snapshot(
                id=data["id"],
                name=data["name"],
                host=data["host"],
                provider=self.provider,
                created_at=data.get("created_at"),
                handle=data.get("image_id"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VendorOutputError(
                f"modal shim {verb} printed an unreadable snapshot: {exc}"
            ) from None

    def _store(self, key: str, verb: str, make: Any) -> Any:
        def parse(stdout: str, ctx: Context) -> None:
            ctx[key] = make(self._parse(stdout, verb), verb)

        return parse

    # --- verbs --------------------------------------------------------------------------

    def list_hosts(self) -> list[Host]:
        data = self._call(self.shim("list"))
        if not isinstance(data, dict) or not isinstance(data.get("hosts"), list):
            raise VendorOutputError("modal shim list printed no host list")
        return [self._host(h) for h in data["hosts"]]

    @staticmethod
    def _gpu(gpu: str | None) -> str | None:
        """Modal names a GPU by its type (`T4`, `H100:2`): a bare count or 'all' is not one."""
        if gpu is not None and (gpu == "all" or gpu.isdigit()):
            raise UsageError(f"--gpu {gpu}: Modal needs a GPU type, e.g. T4, A10G or H100:2")
        return gpu

    def create_plan(self, request: CreateRequest) -> Plan:
        opts = request.options or ModalCreateOptions()
        assert isinstance(opts, ModalCreateOptions)
        snap = request.from_snapshot
        create = self.shim(
            "create",
            *options(
                name=request.name,
                host_id=request.host_id,
                created_at=request.created_at,
                image=None if snap else request.image or self.config.image,
                from_snapshot=snap.id if snap else None,
                cpus=request.resources.cpus,
                memory_mib=request.resources.memory_mib,
                gpu=self._gpu(request.resources.gpu),
                timeout=opts.timeout or self.config.sandbox_timeout_s,
                region=opts.region or self.config.region,
                tag=[f"{k}={v}" for k, v in request.tags.items()],
            ),
            long=True,
        )
        terminate = self.shim("terminate", *options(host_id=request.host_id))
        return self._host_plan(
            f"create sandbox {request.name} in Modal app {self.app}",
            create,
            undo=Step(f"terminate sandbox of {request.name}", command=terminate),
            undo_if_failed=True,  # a timed-out create may have made the sandbox
        )

    def _host_plan(self, description: str, command: Command, **step: Any) -> Plan:
        """One shim call that prints the host it leaves behind."""
        parse = self._store("host", command.argv[3], self._host)
        return Plan(
            [Step(description, command=command, parse=parse, **step)],
            finish=lambda ctx: ctx["host"],
        )

    def destroy_plan(self, host: Host, *, force: bool = False, purge: bool = False) -> Plan:
        what = "terminate sandbox and forget" if host.state == HostState.RUNNING else "forget"
        command = self.shim("terminate", *options(host_id=host.id, purge=purge))
        return Plan([Step(f"{what} host {host.name}", command=command)])

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        if host.state == HostState.STOPPED:
            return Plan([], finish=lambda ctx: host)  # already stopped: nothing to do
        snap_id = new_snapshot_id()
        stamp = utc_now().replace("-", "").replace(":", "").lower()
        command = self.shim(
            "stop",
            *self._snapshot_options(host, snap_id, f"{host.name}-stop-{stamp}"),
            long=True,
        )
        return self._host_plan(
            f"snapshot the filesystem of {host.name}, then terminate its sandbox", command
        )

    def start_plan(self, host: Host) -> Plan:
        if host.state == HostState.RUNNING:
            return Plan([], finish=lambda ctx: host)  # already running: nothing to do
        command = self.shim("start", *options(host_id=host.id), long=True)
        return self._host_plan(f"create a sandbox for {host.name} from its last snapshot", command)

    # --- snapshots ----------------------------------------------------------------------

    def _snapshot_options(self, host: Host, snap_id: str, name: str) -> list[str]:
        return options(
            sandbox_id=self._sandbox_of(host, "snapshot"),
            host_id=host.id,
            snapshot_id=snap_id,
            name=name,
            created_at=utc_now(),
            snapshot_timeout=max(10, int(self.config.long_timeout_s) - 30),
        )

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        snap_id = new_snapshot_id()
        command = self.shim("snapshot", *self._snapshot_options(host, snap_id, name), long=True)
        forget = self.shim("delete-snapshot", *options(snapshot_id=snap_id))
        return Plan(
            [
                Step(
                    f"snapshot the filesystem of {host.name} as {name}",
                    command=command,
                    parse=self._store("snapshot", "snapshot", self._snapshot),
                    undo=Step(f"forget snapshot {snap_id}", command=forget),
                    undo_if_failed=True,
                )
            ],
            finish=lambda ctx: ctx["snapshot"],
        )

    def list_snapshots(self, host: Host | None = None) -> list[Snapshot]:
        data = self._call(self.shim("list-snapshots", *options(host_id=host.id if host else None)))
        if not isinstance(data, dict) or not isinstance(data.get("snapshots"), list):
            raise VendorOutputError("modal shim list-snapshots printed no snapshot list")
        return [self._snapshot(s) for s in data["snapshots"]]

    def snapshot_delete_plan(self, snapshot: Snapshot) -> Plan:
        command = self.shim("delete-snapshot", *options(snapshot_id=snapshot.id))
        return Plan([Step(f"forget snapshot {snapshot.id} ({snapshot.name})", command=command)])

    # --- exec ---------------------------------------------------------------------------

    def _sandbox_of(self, host: Host, verb: str) -> str:
        if host.state != HostState.RUNNING or not host.handle:
            raise MngrError(
                f"cannot {verb} host {host.name!r}: it is {host.state}; "
                f"run 'mngr host start {host.name}' first"
            )
        return host.handle

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        if not argv:
            raise MngrError("no command given (use: mngr host exec NAME -- CMD...)")
        flags = options(sandbox_id=self._sandbox_of(host, "exec on"), tty=tty, detach=detach)
        return self.shim("exec", *flags, "--", *argv)  # run attached: no deadline applies

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        return self.exec_command(host, ["sh", "-c", SHELL], tty=tty)

    def check(self) -> dict[str, Any]:
        return self._call(self.shim("check"))


def options(**values: Any) -> list[str]:
    """Shim flags as `--key=value`, skipping None/False; a list repeats its flag."""
    argv = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [f"{flag}={item}" for item in value]
        else:
            argv.append(f"{flag}={value:g}" if isinstance(value, float) else f"{flag}={value}")
    return argv


def shim_report(stderr: str) -> dict[str, Any] | None:
    """The shim's JSON error: the last stderr line that is one (SDK warnings may precede it)."""
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict) and "kind" in report:
                return report
    return None


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
