"""Backend `mngr`: the hosts of a remote `mngr serve`, over its HTTP API (stdlib; the exec
WebSocket through the `websockets` package).

    [providers.team]
    backend = "mngr"
    url = "https://mngr.example.com"    # http:// is for loopback or a trusted network
    token_env = "MNGR_TEAM_TOKEN"       # or token_file = "~/.config/mngr/team.token"
    ca_file = "/etc/ssl/team-ca.pem"    # optional private CA; TLS is always verified
    providers = ["aws-prod"]            # optional: only these providers of the server
    timeout_s = 60                      # list and check; action_timeout_s for the verbs

The token is read (from the environment variable or the first non-comment line of the
file) for each request; it is never in the settings file, argv, a dry-run or a message.
Without either setting, requests carry no token; a server that wants one answers 401, and
the error says where to set it.

How remote hosts show: `provider` is the *local* instance name (`team`), so `NAME.team` and
every verb route through this backend, and `backend` is `mngr`. The remote side is kept in
`address`: `{"server": URL, "provider": "aws-prod", "backend": "aws", "remote": {the remote
host's own address}}`. One name may exist under two remote providers; then use the host id,
or configure one local instance per remote provider (`providers = ["aws-prod"]`).

`host create` goes to `--remote-provider P`, else the snapshot's provider (with
`--from-snapshot`), else the first of `providers`, else the server's default provider;
`--remote-option KEY=VALUE` (repeatable) passes the remote backend's create options.

Mutating verbs are plans of one HTTP call each; `--dry-run` prints the call, e.g.
`# POST https://mngr.example.com/v1/hosts {"name": "web"}`. A 401/403 is "not authorised"
(exit 5); a server that cannot be reached is an error row in `host list`. A remote provider
the server could not list is an error row too, beside the hosts of the others.

`host exec`, `shell` and `forward` go through the server's exec WebSocket: this backend's
exec, shell and port commands run `mngr __remote-exec` (mngr/toolkit/wsexec.py), which opens
it and pumps stdio; the server runs the host's own transport command (mngr/relay.py).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator

from mngr import resources
from mngr.api import ERROR_OF_KIND, CreateHostBody, error_class
from mngr.backend import (
    Backend,
    Capability,
    CreateOptions,
    CreateRequest,
    Listing,
    ProviderConfig,
)
from mngr.errors import (
    ConfigError,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UnsupportedError,
    UsageError,
    VendorOutputError,
    validation_message,
)
from mngr.names import PROVIDER_NAME_RE
from mngr.plan import Context, Plan, Step
from mngr.records import Host, HostState, Resources, Snapshot
from mngr.runner import Command
from mngr.toolkit.http import HttpStatusError, JsonClient

if TYPE_CHECKING:
    from mngr.toolkit.wsexec import PortChannel

_WARNED_PLAIN_HTTP: set[str] = set()
# What the server answers when it refused a request outright (a 4xx): nothing was made.
REFUSALS = (UsageError, NotFoundError, UnauthorisedError, UnsupportedError)


class MngrRemoteConfig(ProviderConfig):
    needs_trust = frozenset({"url", "token_env", "token_file", "ca_file"})

    url: str
    # Declared only to refuse it with a clear message: a token never sits in settings.
    token: None = Field(None, exclude=True, repr=False)
    # Neither set: requests carry no token (a server on a trusted network may want none).
    token_env: str | None = Field(None, min_length=1)
    token_file: str | None = Field(None, min_length=1, validate_default=True)
    ca_file: str | None = None
    providers: list[str] | None = None
    timeout_s: float = Field(60.0, gt=0)
    action_timeout_s: float = Field(900.0, gt=0)

    @property
    def has_token(self) -> bool:
        return bool(self.token_env or self.token_file)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be http://HOST[:PORT] or https://HOST[:PORT]")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials; use token_env or token_file")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return url.rstrip("/")

    @field_validator("token", mode="before")
    @classmethod
    def _no_token_in_settings(cls, token: object) -> None:
        raise ValueError("never put the token in a settings file; use token_env or token_file")

    @field_validator("token_file")
    @classmethod
    def _one_token_source(cls, token_file: str | None, info: Any) -> str | None:
        if info.data.get("token_env") and token_file:
            raise ValueError("set token_env or token_file, not both")
        return token_file

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, providers: list[str] | None) -> list[str] | None:
        for name in providers or []:
            if not PROVIDER_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid provider name {name!r}")
        return providers


class MngrCreateOptions(CreateOptions):
    remote_provider: str | None = Field(
        None, description="Provider of the remote mngr server to create the host in."
    )
    remote_option: list[str] | None = Field(
        None, description="KEY=VALUE create option of the remote backend (repeatable)."
    )


class MngrBackend(Backend):
    name = "mngr"
    config_model = MngrRemoteConfig
    create_options_model = MngrCreateOptions
    takes = frozenset(resources.ALL)  # the server's backend decides
    # The server applies an idle timeout with its own provider (which may refuse it, saying
    # why), and resets a host's idle clock itself before each exec, shell, push, pull, forward.
    resets_idle_clock_itself = True
    unsupported = {
        Capability.GC: "gc looks at the resources themselves, where the server runs: run "
        "`mngr gc` there",
    }

    config: MngrRemoteConfig

    @classmethod
    def status_note(cls, config: ProviderConfig) -> str | None:
        if isinstance(config, MngrRemoteConfig) and not config.has_token:
            return "without a token"
        return None

    # --- HTTP -------------------------------------------------------------------------

    def _token(self) -> str | None:
        where: str
        if not self.config.has_token:
            return None
        if self.config.token_env:
            where = f"environment variable {self.config.token_env}"
            token = os.environ.get(self.config.token_env, "").strip()
        else:
            path = Path(os.path.expanduser(str(self.config.token_file)))
            where = f"token file {path}"
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise ConfigError(
                    f"provider {self.provider!r}: cannot read {where}: {reason}"
                ) from None
            token = next((s for s in map(str.strip, lines) if s and not s.startswith("#")), "")
        if not token:
            raise ConfigError(f"provider {self.provider!r}: no token in {where}")
        if not all(33 <= ord(c) <= 126 for c in token):
            raise ConfigError(
                f"provider {self.provider!r}: the token in {where} must be printable ASCII "
                "without spaces"
            )
        return token

    @property
    def client(self) -> JsonClient:
        ca_file = None
        if self.config.ca_file:
            ca_file = os.path.expanduser(self.config.ca_file)
            if not os.path.isfile(ca_file):
                raise ConfigError(f"provider {self.provider!r}: ca_file {ca_file} not found")
        return JsonClient(self.config.url, ca_file, self.config.timeout_s)

    def call(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None = None,
        *,
        auth: bool = True,
        timeout_s: float | None = None,
    ) -> Any:
        """One request -> its JSON answer; every failure becomes a specific MngrError."""
        client = self.client
        token = self._token() if auth else None
        if token is not None and client.plain_http_to_another_machine:
            self._warn_plain_http()
        try:
            return client.call(method, url, body, token=token, timeout_s=timeout_s)
        except HttpStatusError as exc:
            raise self._http_error(method, url, exc) from None

    def _warn_plain_http(self) -> None:
        """Once per server and process: a token in clear text on the network."""
        if self.config.url not in _WARNED_PLAIN_HTTP:
            _WARNED_PLAIN_HTTP.add(self.config.url)
            host = urllib.parse.urlsplit(self.config.url).hostname
            sys.stderr.write(
                f"warning: provider {self.provider!r} sends its token over plain http to "
                f"{host}, readable on the network; use https\n"
            )

    def _http_error(self, method: str, url: str, exc: HttpStatusError) -> MngrError:
        where = f"{method} {url} (HTTP {exc.status})"
        if exc.status == 401 and not self.config.has_token:
            origin = f" in {self.origin}" if self.origin else ""
            return UnauthorisedError(
                f"{self.config.url} wants a token and provider {self.provider!r} has none: set "
                f"token_env (an environment variable) or token_file (a file) under "
                f"[providers.{self.provider}]{origin}"
            )
        if exc.status in (401, 403):
            return UnauthorisedError(f"{where}: the server refused the token: {exc.message}")
        if 300 <= exc.status < 400:
            return UnreachableError(f"{where}: the server redirected; check the url setting")
        return error_class(exc.status, exc.error_kind)(f"{self.config.url}: {exc.message}")

    # --- records ----------------------------------------------------------------------

    def _host(self, row: dict[str, Any]) -> Host:
        try:
            state = row.get("state") or "unknown"
            known = {s.value for s in HostState}
            resources = row.get("resources") or {}
            address: dict[str, Any] = {
                "server": self.config.url,
                "provider": row["provider"],
                "backend": row.get("backend"),
            }
            if row.get("address"):
                address["remote"] = row["address"]
            return Host(
                id=row["id"],
                name=row["name"],
                provider=self.provider,
                backend=self.name,
                state=HostState(state) if state in known else HostState.UNKNOWN,
                image=row.get("image"),
                created_at=row.get("created_at"),
                tags={str(k): str(v) for k, v in (row.get("tags") or {}).items()},
                resources=Resources(
                    **{k: resources.get(k) for k in Resources.model_fields if k in resources}
                ),
                address=address,
                snapshots=list(row.get("snapshots") or []),
                # As the server's provider says (one with an `idle_timeout` setting).
                idle_timeout_s=row.get("idle_timeout_s"),
                last_activity_at=row.get("last_activity_at"),
                handle=row["provider"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise VendorOutputError(
                f"{self.config.url} sent a host record mngr cannot read ({exc!r})"
            ) from None

    def _snapshot(self, row: dict[str, Any]) -> Snapshot:
        try:
            return Snapshot(
                id=row["id"],
                name=row["name"],
                host=row["host"],
                provider=self.provider,
                created_at=row.get("created_at"),
                handle=row["provider"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VendorOutputError(
                f"{self.config.url} sent a snapshot record mngr cannot read ({exc!r})"
            ) from None

    def _remote_errors(self, doc: dict[str, Any]) -> list[MngrError]:
        errors = []
        for row in doc.get("errors") or []:
            cls = ERROR_OF_KIND.get(str(row.get("kind")), MngrError)
            errors.append(cls(f"remote provider {row.get('provider')!r}: {row.get('message', '')}"))
        return errors

    # --- verbs ------------------------------------------------------------------------

    def list_hosts(self) -> list[Host] | Listing:
        doc = self.call("GET", self.client.url("/v1/hosts", provider=self.config.providers))
        hosts = [self._host(row) for row in _rows(doc, "hosts", self.config.url)]
        errors = self._remote_errors(doc)
        if errors:
            return Listing(hosts, errors)
        return hosts

    def _action(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        key: str,
        *,
        missing_ok: bool = False,
    ) -> Step:
        """A plan step doing one HTTP call; its answer's `key` lands in the context."""
        shown = f"{method} {url}" + (f" {json.dumps(body)}" if body is not None else "")

        def act(ctx: Context) -> None:
            try:
                answer = self.call(method, url, body, timeout_s=self.config.action_timeout_s)
            except NotFoundError:
                if not missing_ok:
                    raise
                answer = None
            ctx[key] = answer.get(key) if isinstance(answer, dict) else None

        return Step(shown, action=act)

    def _remote_provider_for(self, request: CreateRequest) -> str | None:
        options = request.options
        chosen = options.remote_provider if isinstance(options, MngrCreateOptions) else None
        if chosen is None and request.from_snapshot is not None:
            chosen = request.from_snapshot.handle
        if chosen is None and self.config.providers:
            chosen = self.config.providers[0]
        if chosen is not None and self.config.providers and chosen not in self.config.providers:
            raise UsageError(
                f"remote provider {chosen!r} is not in the providers of {self.provider!r} "
                f"({', '.join(self.config.providers)}): its hosts would not be listed"
            )
        return chosen

    def create_plan(self, request: CreateRequest) -> Plan:
        options = request.options
        remote_options: dict[str, Any] = {}
        if isinstance(options, MngrCreateOptions):
            for item in options.remote_option or []:
                key, sep, value = item.partition("=")
                if not sep or not key.strip():
                    raise UsageError(f"invalid --remote-option {item!r}: expected KEY=VALUE")
                key = key.strip().replace("-", "_")
                if key in remote_options:  # repeated: a list option
                    previous = remote_options[key]
                    remote_options[key] = [
                        *(previous if isinstance(previous, list) else [previous]),
                        value,
                    ]
                else:
                    remote_options[key] = value
        provider = self._remote_provider_for(request)
        asked = request.resources
        fields = {
            "name": request.name,
            "host_id": request.host_id,
            "provider": provider,
            "image": request.image,
            "tags": request.tags or None,
            "from_snapshot": request.from_snapshot.id if request.from_snapshot else None,
            "options": remote_options or None,
            "cpus": None if asked.cpus is None else f"{asked.cpus:g}",
            "memory": resources.size_text(asked.memory_bytes),
            "disk": resources.size_text(asked.disk_bytes),
            "gpu": asked.gpu,
            # Not given: the server's provider applies its own `idle_timeout` setting.
            "idle_timeout": None
            if request.idle_timeout_s is None
            else f"{request.idle_timeout_s}s",
        }
        try:  # the server's own body model: a value it would refuse is refused here first
            body = CreateHostBody.model_validate({k: v for k, v in fields.items() if v})
        except ValidationError as exc:
            raise UsageError(validation_message(exc.errors()[0])) from None
        body = body.model_dump(exclude_none=True, exclude_defaults=True) | {"name": request.name}
        post = self._action("POST", self.client.url("/v1/hosts"), body, "host")
        remove_url = self.client.url(f"/v1/hosts/{request.host_id}", provider=provider, force=True)
        remove = self._action("DELETE", remove_url, None, "removed", missing_ok=True)

        def create(ctx: Context) -> None:
            try:
                post.action(ctx)  # type: ignore[misc]
            except REFUSALS:
                ctx["refused"] = True  # the server answered no: it made nothing
                raise

        def undo(ctx: Context) -> None:
            if not ctx.get("refused"):
                remove.action(ctx)  # type: ignore[misc]

        # A create that timed out (or lost its answer) may have made the host: the undo
        # removes it by the id this create gave it, never by name (that may be another's).
        step = Step(
            post.description,
            action=create,
            undo=Step(remove.description, action=undo),
            undo_if_failed=True,
        )
        return Plan([step], finish=lambda ctx: self._host(ctx["host"]))

    def _host_url(self, host: Host, suffix: str = "", **query: Any) -> str:
        ref = urllib.parse.quote(host.id, safe="")
        return self.client.url(f"/v1/hosts/{ref}{suffix}", provider=host.handle, **query)

    def destroy_plan(self, host: Host, *, force: bool = False) -> Plan:
        url = self._host_url(host, force=force)
        # A host already gone is not an error for destroy.
        return Plan([self._action("DELETE", url, None, "host", missing_ok=True)])

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        body = {"snapshot": True} if snapshot else None
        return Plan([self._action("POST", self._host_url(host, "/stop"), body, "host")])

    def start_plan(self, host: Host) -> Plan:
        return Plan([self._action("POST", self._host_url(host, "/start"), None, "host")])

    def restore_plan(self, host: Host, snapshot: Snapshot) -> Plan:
        body = {"snapshot": snapshot.id}
        step = self._action("POST", self._host_url(host, "/start"), body, "host")
        return Plan([step], finish=lambda ctx: self._host(ctx["host"]))

    def tag_plan(self, host: Host, tags: dict[str, str], remove: list[str]) -> Plan:
        body = {"set": tags, "remove": remove}
        return Plan([self._action("POST", self._host_url(host, "/tags"), body, "host")])

    def touch_plan(self, host: Host) -> Plan:
        return Plan([self._action("POST", self._host_url(host, "/touch"), None, "host")])

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        step = self._action("POST", self._host_url(host, "/snapshots"), {"name": name}, "snapshot")
        return Plan([step], finish=lambda ctx: self._snapshot(ctx["snapshot"]))

    def list_snapshots(self, host: Host | None = None) -> list[Snapshot] | Listing:
        doc = self.call("GET", self.client.url("/v1/snapshots", provider=self.config.providers))
        snaps = [self._snapshot(row) for row in _rows(doc, "snapshots", self.config.url)]
        if host is not None:
            snaps = [s for s in snaps if s.host == host.name and s.handle == host.handle]
        errors = self._remote_errors(doc)
        if errors:
            return Listing(snaps, errors)
        return snaps

    def snapshot_delete_plan(self, snapshot: Snapshot) -> Plan:
        ref = urllib.parse.quote(snapshot.id, safe="")
        url = self.client.url(f"/v1/snapshots/{ref}", provider=snapshot.handle)
        return Plan([self._action("DELETE", url, None, "snapshot")])

    # --- transport: exec, shell and forward through the server's WebSocket route ---------

    def _stream_command(self, host: Host, *how: str) -> Command:
        """`mngr __remote-exec` on the host's exec route (mngr/toolkit/wsexec.py): it opens
        the WebSocket and pumps stdio; the token travels in its environment, never argv."""
        from mngr.toolkit import wsexec

        token = self._token()
        client = self.client  # checks ca_file
        if token is not None and client.plain_http_to_another_machine:
            self._warn_plain_http()
        argv = [sys.executable, "-m", "mngr", wsexec.COMMAND, self._host_url(host, "/exec")]
        argv += ["--timeout", f"{self.config.timeout_s:g}"]
        if client.ca_file:
            argv += ["--ca-file", client.ca_file]
        # Set even when empty: a token in the caller's own environment is not this provider's.
        return Command([*argv, *how], env={wsexec.TOKEN_ENV: token or ""})

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        flags = ["--tty"] * tty + ["--detach"] * detach
        return self._stream_command(host, *flags, "--", *argv)

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        return self._stream_command(host, "--shell", *["--tty"] * tty)

    def port_command(self, host: Host, port: int) -> Command:
        return self._stream_command(host, "--port", str(port))

    def port_channel(self, host: Host, port: int) -> Callable[[], PortChannel]:
        """A WebSocket per forwarded connection, opened in the forwarding process."""
        from mngr.toolkit.wsexec import PortChannel

        token, client = self._token(), self.client  # checked once, not per connection
        if token is not None and client.plain_http_to_another_machine:
            self._warn_plain_http()
        url, timeout = self._host_url(host, "/exec"), self.config.timeout_s
        return lambda: PortChannel(url, token, client.ca_file, timeout, port)

    def check(self) -> dict[str, Any]:
        health = self.call("GET", self.client.url("/v1/health"), auth=False)
        doc = self.call("GET", self.client.url("/v1/providers"))
        names = [p.get("name") for p in _rows(doc, "providers", self.config.url)]
        wanted = self.config.providers
        missing = [p for p in wanted or [] if p not in names]
        if missing:
            raise NotFoundError(
                f"{self.config.url} has no provider {missing[0]!r} (it has: {', '.join(names)})"
            )
        return {
            "url": self.config.url,
            "server_version": health.get("version") if isinstance(health, dict) else None,
            "providers": wanted or names,
        }


def _rows(doc: Any, key: str, url: str) -> list[dict[str, Any]]:
    rows = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise VendorOutputError(f"{url} answered without a list of {key}")
    return rows
