"""Modal backend: a host is a Modal sandbox, driven through our shim over the Modal SDK.

The `modal` CLI cannot create, tag or snapshot sandboxes, so every verb is one call of

    <python> -m mngr_backends.modal_shim VERB --app=APP --volume=VOLUME --provider=P ...

(backends/modal_shim.py, the only code that imports `modal`): argv in, JSON out, errors as
one JSON object on stderr. The SDK is an optional extra (`mngr[modal]`); `python` in the
provider's settings may name another interpreter that has it (and mngr).

    running host   a sandbox of app APP tagged mngr-host-id, mngr-host-name, mngr-provider,
                   mngr-created-at (+ mngr-image and the resources asked for) and user tags
    stopped host   a record file in the modal.Volume VOLUME (kept until removed; a Dict entry
                   expires after 7 days unread): Modal sandboxes cannot be stopped, so
                   stop = snapshot_filesystem + terminate, start = a new sandbox (same name,
                   id and tags) from the host's latest snapshot image; having no sandbox, a
                   stopped host cannot be snapshotted (its `unsupported` says so)
    snapshot       a record file in VOLUME naming the snapshot image, made with no expiry;
                   `snapshot delete` deletes the image (unless a stopped host starts from it)
                   and the record

`address` of a running host: `app` (the Modal app) and `sandbox_id` (for `modal shell`,
`modal container exec`); a stopped host has none. `handle` is the sandbox id.

Credentials reach the shim through its environment only (MODAL_TOKEN_ID/SECRET from the env
vars named by token_id_env/token_secret_env, MODAL_PROFILE), never argv.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, TypeVar

from pydantic import Field, field_validator, model_validator

from mngr import resources
from mngr.backend import (
    ArgvValue,
    Backend,
    Capability,
    CreateOptions,
    CreateRequest,
    ProviderConfig,
)
from mngr.errors import (
    ConflictError,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UsageError,
    VendorCommandError,
    VendorMissingError,
    VendorTimeoutError,
    exit_status,
)
from mngr.names import new_snapshot_id
from mngr.plan import Context, Plan, Step
from mngr.records import Host, HostState, Resources, Snapshot, utc_now
from mngr.runner import Command, Completed
from mngr.toolkit import vendor_json
from mngr.toolkit.argv import Argv
from mngr.toolkit.rules import Rule, classify
from mngr.toolkit.vendor_json import HostFields, Lenient

from .modal_shim import TAG_MAX, encode_tag_value

M = TypeVar("M", bound=Lenient)
SHIM = "mngr_backends.modal_shim"
MODAL_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHELL = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"


def _report(kind: str) -> str:
    """A line of stderr that is the shim's JSON error of this kind."""
    return rf'(?m)^\s*\{{"kind": "{kind}"'


# Context: verb, provider, python, message and fix (of the shim's report), last stderr line,
# exit status.
RULES = [
    Rule(
        _report("unauthorised"),
        UnauthorisedError,
        say="Modal refused provider {provider!r}: {message}; fix: {fix}",
    ),
    Rule(
        _report("vendor-missing"),
        VendorMissingError,
        say="{message}; fix (provider {provider!r}): {fix}",
    ),
    Rule(_report("not-found"), NotFoundError, say="modal {verb}: {message}"),
    Rule(_report("conflict"), ConflictError, say="modal {verb}: {message}"),
    Rule(
        _report("unreachable"),
        UnreachableError,
        say="Modal is unreachable (modal {verb}): {message}",
    ),
    Rule(_report('[^"]*'), MngrError, say="modal {verb}: {message}"),
    Rule(
        r"No module named '?mngr_backends",
        VendorMissingError,
        say="{python} cannot run the Modal shim ({last}); install mngr[modal] for it or set "
        'python = "/path/to/python" for provider {provider!r}',
    ),
    Rule("", MngrError, say="modal shim {verb} failed ({status}): {last}"),
]


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


# --- what the shim prints -----------------------------------------------------------------


class ShimHost(HostFields):
    resources: Resources = Field(default_factory=Resources)
    sandbox_id: str | None = None

    def record(self, backend: ModalBackend) -> Host:
        sandbox = self.sandbox_id
        unsupported = {}
        if self.state == HostState.STOPPED:  # no sandbox to snapshot until it starts
            unsupported[str(Capability.SNAPSHOT)] = (
                f"it is stopped; run 'mngr host start {self.name}' first"
            )
        return Host(
            **self.model_dump(exclude={"sandbox_id"}),
            provider=backend.provider,
            backend=backend.name,
            address={"app": backend.app, "sandbox_id": sandbox} if sandbox else {},
            unsupported=unsupported,
            handle=sandbox,
        )


class ShimSnapshot(Lenient):
    id: str
    name: str
    host: str
    created_at: str | None = None
    image_id: str | None = None

    def record(self, backend: ModalBackend) -> Snapshot:
        return Snapshot(
            **self.model_dump(exclude={"image_id"}), provider=backend.provider, handle=self.image_id
        )


class HostList(Lenient):
    hosts: list[ShimHost]


class SnapshotList(Lenient):
    snapshots: list[ShimSnapshot]


class ShimReport(Lenient):
    """The shim's error, one JSON object on stderr."""

    kind: str
    message: str = ""
    fix: str = ""


def shim_report(stderr: str) -> ShimReport:
    """The shim's JSON error: the last line of stderr that is one (SDK warnings may come
    before or after it); none when the shim crashed or never ran."""
    for line in reversed(stderr.splitlines()):
        if line.lstrip().startswith('{"kind"'):
            try:
                return vendor_json.parse(ShimReport, line, "modal shim")
            except MngrError:
                continue
    return ShimReport(kind="")


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""


class ModalBackend(Backend):
    name = "modal"
    config_model = ModalConfig
    create_options_model = ModalCreateOptions
    takes = frozenset({resources.CPUS, resources.MEMORY, resources.GPU})
    unsupported = {
        Capability.IDLE_STOP: (
            "Modal's own idle_timeout terminates the sandbox, and its files with it (mngr "
            "stops a Modal host by a snapshot first), and does not count a detached process "
            "as activity: an idle host would be lost, not stopped"
        ),
        Capability.GC: (
            "a sandbox ends at its timeout and `snapshot delete` deletes a snapshot's image; "
            "gc of the provider's record volume is not offered yet"
        ),
    }

    config: ModalConfig

    # --- the shim command ---------------------------------------------------------------

    @property
    def python(self) -> str:
        return os.path.expanduser(self.config.python) if self.config.python else sys.executable

    @property
    def app(self) -> str:
        return self.config.app or f"mngr-{self.provider}"[:64]

    @property
    def volume_name(self) -> str:
        return f"{self.app[:56]}-records"

    def shim(self, verb: str, *words: str, long: bool = False, **flags: Any) -> Command:
        """`python -m SHIM VERB --app= --volume= --provider= [--environment=] FLAGS WORDS`."""
        common = {"app": self.app, "volume": self.volume_name, "provider": self.provider}
        argv = Argv([self.python, "-m", SHIM, verb])
        argv.add_all({**common, "environment": self.config.environment, **flags}, eq=True)
        timeout = self.config.long_timeout_s if long else self.config.timeout_s
        return Command(argv.words(words), timeout_s=timeout, env=self._env())

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
        report = shim_report(error.stderr)
        fix = report.fix
        if self.config.token_id_env and report.kind == "unauthorised":
            fix = (
                f"check that ${self.config.token_id_env} and ${self.config.token_secret_env} "
                "hold a valid Modal token (`modal token new` creates one)"
            )
        return classify(
            error,
            RULES,
            verb=error.argv[3] if len(error.argv) > 3 else "?",
            provider=self.provider,
            python=self.python,
            message=report.message.rstrip(".") or "no error text",
            fix=fix,
            last=last_line(error.stderr)[:300] or "no error text",
            status=exit_status(error.returncode),
        )

    @staticmethod
    def _read(model: type[M], stdout: str, command: Command) -> M:
        return vendor_json.parse(model, stdout, f"modal shim {command.argv[3]}")

    def _call(self, command: Command, model: type[M]) -> M:
        return self._read(model, self.run(command).stdout, command)

    def _plan(
        self, description: str, command: Command, model: type[ShimHost | ShimSnapshot], **step: Any
    ) -> Plan:
        """One shim call that prints the host (or snapshot) it leaves behind."""

        def parse(stdout: str, ctx: Context) -> None:
            ctx["record"] = self._read(model, stdout, command).record(self)

        return Plan(
            [Step(description, command=command, parse=parse, **step)],
            finish=lambda ctx: ctx["record"],
        )

    # --- verbs --------------------------------------------------------------------------

    def list_hosts(self) -> list[Host]:
        return [h.record(self) for h in self._call(self.shim("list"), HostList).hosts]

    @staticmethod
    def _gpu(gpu: str | None) -> str | None:
        """Modal names a GPU by its type (`T4`, `H100:2`): a bare count or 'all' is not one."""
        if gpu is not None and (gpu == "all" or gpu.isdigit()):
            raise UsageError(f"--gpu {gpu}: Modal needs a GPU type, e.g. T4, A10G or H100:2")
        return gpu

    @staticmethod
    def _tag_flags(tags: dict[str, str]) -> list[str]:
        """`k=v` flags of the shim; a value too long for a Modal tag once encoded is refused."""
        for key, value in tags.items():
            size = len(encode_tag_value(value))
            if size > TAG_MAX:
                raise UsageError(
                    f"tag {key!r}: a Modal tag holds {TAG_MAX} characters, and this value takes "
                    f"{size} (letters, digits, '_' and '-' take one, any other character three "
                    "per UTF-8 byte); shorten it"
                )
        return [f"{k}={v}" for k, v in tags.items()]

    def create_plan(self, request: CreateRequest) -> Plan:
        opts = request.options or ModalCreateOptions()
        assert isinstance(opts, ModalCreateOptions)
        snap = request.from_snapshot
        create = self.shim(
            "create",
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
            tag=self._tag_flags(request.tags),
            long=True,
        )
        terminate = self.shim("terminate", host_id=request.host_id)
        return self._plan(
            f"create sandbox {request.name} in Modal app {self.app}",
            create,
            ShimHost,
            undo=Step(f"terminate sandbox of {request.name}", command=terminate),
            undo_if_failed=True,  # a timed-out create may have made the sandbox
        )

    def destroy_plan(self, host: Host, *, force: bool = False) -> Plan:
        what = "terminate sandbox and forget" if host.state == HostState.RUNNING else "forget"
        command = self.shim("terminate", host_id=host.id)
        return Plan([Step(f"{what} host {host.name}", command=command)])

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        if host.state == HostState.STOPPED:
            return Plan([], finish=lambda ctx: host)  # already stopped: nothing to do
        stamp = utc_now().replace("-", "").replace(":", "").lower()
        flags = self._snapshot_flags(host, f"{host.name}-stop-{stamp}")
        return self._plan(
            f"snapshot the filesystem of {host.name}, then terminate its sandbox",
            self.shim("stop", **flags, long=True),
            ShimHost,
        )

    def start_plan(self, host: Host) -> Plan:
        if host.state == HostState.RUNNING:
            return Plan([], finish=lambda ctx: host)  # already running: nothing to do
        return self._plan(
            f"create a sandbox for {host.name} from its last snapshot",
            self.shim("start", host_id=host.id, long=True),
            ShimHost,
        )

    def tag_plan(self, host: Host, tags: dict[str, str], remove: list[str]) -> Plan:
        where = "sandbox" if host.state == HostState.RUNNING else "stopped record"
        command = self.shim(
            "tag",
            host_id=host.id,
            sandbox_id=host.handle,
            tag=self._tag_flags(tags),
            remove=remove,
        )
        return self._plan(f"change the tags on the {where} of {host.name}", command, ShimHost)

    def restore_plan(self, host: Host, snapshot: Snapshot) -> Plan:
        command = self.shim(
            "restore", host_id=host.id, sandbox_id=host.handle, snapshot_id=snapshot.id, long=True
        )
        return self._plan(
            f"create a sandbox for {host.name} from snapshot {snapshot.name}", command, ShimHost
        )

    # --- snapshots ----------------------------------------------------------------------

    def _snapshot_flags(self, host: Host, name: str) -> dict[str, Any]:
        return {
            "sandbox_id": host.handle,
            "host_id": host.id,
            "snapshot_id": new_snapshot_id(),
            "name": name,
            "created_at": utc_now(),
            "snapshot_timeout": max(10, int(self.config.long_timeout_s) - 30),
        }

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        flags = self._snapshot_flags(host, name)
        forget = self.shim("delete-snapshot", snapshot_id=flags["snapshot_id"])
        return self._plan(
            f"snapshot the filesystem of {host.name} as {name}",
            self.shim("snapshot", **flags, long=True),
            ShimSnapshot,
            undo=Step(f"forget snapshot {flags['snapshot_id']}", command=forget),
            undo_if_failed=True,
        )

    def list_snapshots(self, host: Host | None = None) -> list[Snapshot]:
        command = self.shim("list-snapshots", host_id=host.id if host else None)
        return [s.record(self) for s in self._call(command, SnapshotList).snapshots]

    def snapshot_delete_plan(self, snapshot: Snapshot) -> Plan:
        command = self.shim("delete-snapshot", snapshot_id=snapshot.id)
        return Plan([Step(f"forget snapshot {snapshot.id} ({snapshot.name})", command=command)])

    # --- exec ---------------------------------------------------------------------------

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        # Run attached: no deadline applies.
        return self.shim("exec", "--", *argv, sandbox_id=host.handle, tty=tty, detach=detach)

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        return self.exec_command(host, ["sh", "-c", SHELL], tty=tty)

    def check(self) -> dict[str, Any]:
        return vendor_json.load(self.run(self.shim("check")).stdout, "modal shim check")
