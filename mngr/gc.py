"""`mngr gc`: what mngr made that no host owns any more, found by each backend
(`Backend.find_orphans`), then kept or deleted by the rules here, the same for every backend:

- nothing younger than its provider's create deadline is touched (a concurrent create's);
- nothing whose age is unknown is touched;
- a snapshot of a destroyed host is kept unless snapshots are asked for (they are often
  wanted), and anything younger than `--older-than` is kept.

A backend only ever reports what carries mngr's marker (a label, a tag, a record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from mngr.backend import Orphan
from mngr.records import ProviderErrorRow


def age_s(created_at: str | None, now: datetime) -> float | None:
    """Seconds since an ISO 8601 time (a trailing Z, an offset, or none: UTC), or None."""
    if not created_at:
        return None
    try:
        when = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (now - when).total_seconds()


def reason_to_keep(
    orphan: Orphan,
    *,
    deadline_s: float,
    snapshots: bool,
    older_than_s: float | None,
    now: datetime,
) -> str | None:
    """Why gc leaves this orphan alone, or None when it goes."""
    age = age_s(orphan.created_at, now)
    if age is None:
        return "its age is unknown"
    if age < deadline_s:
        return f"younger than a create may take ({deadline_s:g}s): it may be one in progress"
    if older_than_s is not None and age < older_than_s:
        return f"younger than --older-than ({older_than_s:g}s)"
    if orphan.snapshot and not snapshots:
        return "a snapshot (pass --snapshots to delete snapshots of destroyed hosts)"
    return None


@dataclass
class GcReport:
    """What gc found: to delete (with a plan each, in `batch`), kept (with why), providers
    that could not answer, and providers gc does not look at (with why)."""

    delete: list[Orphan] = field(default_factory=list)
    kept: list[tuple[Orphan, str]] = field(default_factory=list)
    errors: list[ProviderErrorRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
