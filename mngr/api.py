"""The HTTP API of `mngr serve`, shared by the server and the `mngr` backend's client: the
request and response bodies, the patterns of what a path may hold, and the error kinds that
travel as `{"error": {"kind", "message"}}`. Pydantic only: the client needs no FastAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mngr.errors import (
    ConflictError,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UnsupportedError,
    UsageError,
    VendorMissingError,
    VendorOutputError,
    VendorTimeoutError,
)
from mngr.names import HOST_ID_RE, HOST_NAME_RE, PROVIDER_NAME_RE, check_tag
from mngr.records import SCHEMA_VERSION, Host, ProviderErrorRow, Snapshot

MAX_TAGS = 64
# A host ref: NAME, NAME.PROVIDER or host-<hex> (which is itself a valid NAME).
HOST_REF_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}(\.[a-z0-9][a-z0-9_-]{0,62})?$"
NAME_PATTERN = HOST_NAME_RE.pattern
PROVIDER_PATTERN = PROVIDER_NAME_RE.pattern
# Printable ASCII without spaces, not starting with '-' (it reaches vendor argv).
IMAGE_PATTERN = r"^[A-Za-z0-9_./:@][\x21-\x7e]{0,511}$"

# An error's kind (mngr's own, as MngrError.kind) back to its class, on the client side.
ERROR_OF_KIND: dict[str, type[MngrError]] = {
    "usage": UsageError,
    "config": UsageError,
    "unsupported": UnsupportedError,
    "not-found": NotFoundError,
    "conflict": ConflictError,
    "vendor-missing": VendorMissingError,
    "unauthorised": UnauthorisedError,
    "unreachable": UnreachableError,
    "timeout": VendorTimeoutError,
    "bad-output": VendorOutputError,
}


def error_class(status: int, kind: str = "") -> type[MngrError]:
    """The error of an HTTP error answer: by its kind when mngr knows it, else by status."""
    known = ERROR_OF_KIND.get(kind)
    if known is not None:
        return known
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if 400 <= status < 500:
        return UsageError
    if status in (502, 503, 504):
        return UnreachableError
    return MngrError


class CreateHostBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Host name (as on the command line).")
    host_id: str | None = Field(
        None,
        pattern=HOST_ID_RE.pattern,
        description="The client's id for the new host: a create repeated with it (a retry) "
        "gets that host back, and the client can remove it by this id.",
    )
    provider: str | None = Field(
        None, pattern=PROVIDER_PATTERN, description="Provider (default: the server's default)."
    )
    image: str | None = Field(None, pattern=IMAGE_PATTERN)
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS)
    from_snapshot: str | None = Field(
        None, pattern=NAME_PATTERN, description="Snapshot id or name to start from."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description="The provider backend's create options (its `host create` flags).",
    )
    cpus: str | None = Field(None, max_length=32, description="CPUs, as `host create --cpus`.")
    memory: str | None = Field(None, max_length=32, description="Memory with a unit: 2g.")
    disk: str | None = Field(None, max_length=32, description="Disk with a unit: 20g.")
    gpu: str | None = Field(None, max_length=70, description="A count, 'all', or a type: H100:2.")
    idle_timeout: str | None = Field(
        None,
        max_length=32,
        description="Stop by itself after this long without activity (30m, 2h; 0: never), as "
        "`host create --idle-timeout`; absent: the provider's `idle_timeout` setting.",
    )

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            try:
                check_tag(key, value)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return tags


class StopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: bool = Field(False, description="Snapshot the host before stopping it.")


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
        description="Start from this snapshot (name or id) of the host's provider.",
    )


class TagBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set: dict[str, str] = Field(default_factory=dict, description="Tags to set.")
    remove: list[str] = Field(default_factory=list, description="Tag keys to remove.")


class SnapshotBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=NAME_PATTERN)


class ExecStart(BaseModel):
    """The first message on `/v1/hosts/{ref}/exec`: what to run in the host (one of argv,
    shell, port), over the host's own transport."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] | None = Field(None, min_length=1, max_length=4096)
    shell: bool = False
    port: int | None = Field(None, ge=1, le=65535, description="Connect to this port in the host.")
    tty: bool = Field(False, description="Run it on a terminal (the server's pty).")
    detach: bool = False
    cols: int = Field(80, ge=1, le=10000)
    rows: int = Field(24, ge=1, le=10000)

    @model_validator(mode="after")
    def _one_thing(self) -> ExecStart:
        if sum((self.argv is not None, self.shell, self.port is not None)) != 1:
            raise ValueError("give exactly one of argv, shell and port")
        return self


class HostList(BaseModel):
    schema_version: int = SCHEMA_VERSION
    hosts: list[Host]
    errors: list[ProviderErrorRow]


class HostResult(BaseModel):
    schema_version: int = SCHEMA_VERSION
    host: Host


class SnapshotList(BaseModel):
    schema_version: int = SCHEMA_VERSION
    snapshots: list[Snapshot]
    errors: list[ProviderErrorRow]


class SnapshotResult(BaseModel):
    schema_version: int = SCHEMA_VERSION
    snapshot: Snapshot


class ProviderInfo(BaseModel):
    name: str
    backend: str
    default: bool
    available: bool
    reason: str | None = None
    unsupported: dict[str, str] = Field(default_factory=dict)


class ProviderList(BaseModel):
    schema_version: int = SCHEMA_VERSION
    providers: list[ProviderInfo]


class Health(BaseModel):
    status: str
    version: str
    schema_version: int = SCHEMA_VERSION


class ErrorDetail(BaseModel):
    kind: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail
