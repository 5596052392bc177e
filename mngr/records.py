"""Host and snapshot records: the versioned shape printed by `--format json`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class HostState(StrEnum):
    BUILDING = "building"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    DESTROYED = "destroyed"
    UNKNOWN = "unknown"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: float | None = None
    memory_gb: float | None = None
    gpus: int | str | None = None
    disk_gb: float | None = None


class SshEndpointRecord(BaseModel):
    """A host's own ssh address, where it has one (ssh pool, aws): what `host ssh-config`
    writes, for plain `ssh`, `scp` and `rsync`."""

    model_config = ConfigDict(extra="forbid")

    host: str
    port: int
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str
    strict_host_key_checking: str  # "yes", or "accept-new" (trust a first key); never "no"


class Host(BaseModel):
    """One host as a provider reports it. Rebuilt from provider-side state on every list."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    provider: str
    backend: str
    state: HostState = HostState.UNKNOWN
    image: str | None = None
    created_at: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    address: dict[str, Any] = Field(default_factory=dict)
    snapshots: list[str] = Field(default_factory=list)
    ssh_endpoint: SshEndpointRecord | None = None  # filled in by the engine on listing
    # Idle stop (mngr.idle): the host stops itself after this many seconds without activity
    # (None: never), and when it was last in use, where its provider can tell (else None).
    idle_timeout_s: int | None = None
    last_activity_at: str | None = None
    # What this host cannot do beyond its provider's limits, with the reason (a spot
    # instance cannot stop): {"stop/start": "..."}. Verbs refuse it before running anything.
    unsupported: dict[str, str] = Field(default_factory=dict)
    # The backend's own opaque handle on the host (a container id, an instance id, a sandbox
    # id, a claimed machine, a remote provider): only the backend that made the record reads
    # it, and it is never in the JSON output. What a user may rely on is in `address`.
    handle: str | None = Field(default=None, exclude=True)

    @property
    def ref(self) -> str:
        return f"{self.name}.{self.provider}"

    def to_json(self) -> dict[str, Any]:
        """The record as `--format json` prints it (no handle)."""
        return self.model_dump(mode="json")


class Snapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    host: str
    provider: str
    created_at: str | None = None
    handle: str | None = Field(default=None, exclude=True)  # the backend's own, as on Host

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ProviderErrorRow(BaseModel):
    """A provider that could not answer: shown as an error, never as 'no hosts'."""

    provider: str
    kind: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def changed_tags(
    current: dict[str, str], tags: dict[str, str], remove: list[str]
) -> dict[str, str]:
    """A host's tags after `host tag`: `tags` set, the keys in `remove` gone (absent: no-op)."""
    changed = {**current, **tags}
    for key in remove:
        changed.pop(key, None)
    return changed


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
