"""The engine: builds provider instances, fans work out across them concurrently, resolves
host references and runs plans. It returns data; the CLI renders it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from mngr import paths
from mngr.backend import Backend, Listing
from mngr.config import BUILTIN, Settings
from mngr.errors import (
    ConfigError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UsageError,
    VendorMissingError,
)
from mngr.fanout import Outcome, Waiting, fan_out  # also imported from here by older code
from mngr.names import HOST_ID_RE, split_host_ref
from mngr.plan import Plan, execute
from mngr.records import Host, ProviderErrorRow, Snapshot, SshEndpointRecord
from mngr.registry import load_backend
from mngr.runner import Runner

# A provider gets its own timeout plus this margin before the engine gives up waiting on it.
DEADLINE_MARGIN_S = 5.0


# Error rows whose cause keeps its own exit code when a verb cannot resolve a host.
ROW_ERRORS: dict[str, type[MngrError]] = {
    e.kind: e for e in (UnauthorisedError, VendorMissingError, ConfigError)
}


@dataclass
class ListResult:
    hosts: list[Host] = field(default_factory=list)
    errors: list[ProviderErrorRow] = field(default_factory=list)


class Engine:
    def __init__(self, settings: Settings, runner: Runner | None = None, jobs: int = 8) -> None:
        if jobs < 1:
            raise UsageError("--jobs must be at least 1")
        self.settings = settings
        self.runner = runner or Runner()
        self.jobs = jobs
        # `--timeout`, and `mngr serve` (it answers before its client gives up)
        self.max_deadline_s: float | None = None
        self.waiting: Waiting | None = None  # told which providers are still being waited on
        self._backends: dict[str, Backend] = {}

    # --- providers --------------------------------------------------------------------

    def backend(self, provider: str) -> Backend:
        if provider not in self._backends:
            entry = self.settings.provider(provider)
            if entry.unavailable or entry.config is None:
                raise VendorMissingError(
                    f"provider {provider!r} is unavailable: {entry.unavailable}"
                )
            if not entry.config.enabled:
                from mngr.config import _source_of, find_line, where

                source = _source_of(entry, "enabled")
                line = find_line(source, "enabled", provider=provider) if source else None
                default = (
                    " (the default_provider)" if provider == self.settings.default_provider else ""
                )
                raise UsageError(
                    f"provider {provider!r}{default} is disabled (enabled = false in "
                    f"{where(source, line)})"
                )
            cls = load_backend(entry.backend)
            backend = cls(entry.config, self.runner)
            backend.origin = next((s for s in reversed(entry.sources) if s != BUILTIN), None)
            self._backends[provider] = backend
        return self._backends[provider]

    def usable_providers(self, names: list[str] | None = None) -> list[str]:
        if names:
            for name in names:
                self.settings.provider(name)  # raises "no provider named ..." early
            return list(dict.fromkeys(names))
        return [
            n
            for n, e in self.settings.providers.items()
            if not e.unavailable and e.raw.get("enabled", True) is not False
        ]

    def deadline(self, providers: list[str]) -> float:
        timeouts = [
            getattr(self.settings.providers[p].config, "timeout_s", 60.0) or 60.0 for p in providers
        ]
        longest = max(timeouts, default=60.0) + DEADLINE_MARGIN_S
        return min(longest, self.max_deadline_s) if self.max_deadline_s else longest

    # --- listing ----------------------------------------------------------------------

    def list_hosts(self, providers: list[str] | None = None) -> ListResult:
        names = self.usable_providers(providers)
        outcomes = fan_out(
            lambda p: self.backend(p).list_hosts(),
            names,
            jobs=max(self.jobs, len(names)),
            deadline_s=self.deadline(names),
            waiting=self.waiting,
        )
        hosts, errors = _collect(outcomes)
        for host in hosts:
            host.ssh_endpoint = self.ssh_endpoint_record(host)
        result = ListResult(hosts, [self._builtin_hint(row) for row in errors])
        result.hosts.sort(key=lambda h: (h.provider, h.name))
        answered = [o.item for o in outcomes if o.error is None]
        _remember_host_names(answered, result.hosts, complete=not providers)
        return result

    def ssh_endpoint_record(self, host: Host) -> SshEndpointRecord | None:
        """The host's ssh endpoint as its record shows it (none where it cannot give one)."""
        try:
            endpoint = self.backend(host.provider).ssh_endpoint(host)
        except MngrError:
            return None
        return SshEndpointRecord(**endpoint.record()) if endpoint is not None else None

    def _builtin_hint(self, row: ProviderErrorRow) -> ProviderErrorRow:
        """A built-in provider the user never configured says how to switch it off."""
        entry = self.settings.providers.get(row.provider)
        if (
            entry is not None
            and entry.sources == [BUILTIN]
            and row.kind in ("unreachable", "timeout")
        ):
            row.message += (
                f" (to skip this built-in provider, set `enabled = false` under "
                f"[providers.{row.provider}] in {paths.user_settings()})"
            )
        return row

    def list_snapshots(
        self, providers: list[str] | None = None, host: Host | None = None
    ) -> tuple[list[Snapshot], list[ProviderErrorRow]]:
        names = [host.provider] if host else self.usable_providers(providers)
        outcomes = fan_out(
            lambda p: self.backend(p).list_snapshots(host),
            names,
            waiting=self.waiting,
            jobs=max(self.jobs, len(names)),
            deadline_s=self.deadline(names),
        )
        return _collect(outcomes)

    # --- resolving references ---------------------------------------------------------

    def resolve_hosts(
        self, refs: list[str], provider: str | None = None, *, missing_ok: bool = False
    ) -> list[tuple[str, Host | None]]:
        """Each reference -> its host (None: missing and `missing_ok`); the first reference
        that resolves to nothing is raised. Lists each needed provider once."""
        found: list[tuple[str, Host | None]] = []
        for ref, host in self.resolve_each(refs, provider, missing_ok=missing_ok):
            if isinstance(host, MngrError):
                raise host
            found.append((ref, host))
        return found

    def resolve_each(
        self, refs: list[str], provider: str | None = None, *, missing_ok: bool = False
    ) -> list[tuple[str, Host | MngrError | None]]:
        """Each reference -> its host, or the error saying why it names none (not found,
        ambiguous, provider unreachable): a dry run reports every one."""
        parsed = [(ref, *split_host_ref(ref)) for ref in refs]
        wanted: list[str] | None
        if provider:
            wanted = [provider]
        elif all(p for _, _, p in parsed):
            wanted = [p for _, _, p in parsed]  # type: ignore[misc]
        else:
            wanted = None
        listing = self.list_hosts(wanted)
        found: list[tuple[str, Host | MngrError | None]] = []
        for ref, key, ref_provider in parsed:
            want = ref_provider or provider
            if HOST_ID_RE.fullmatch(key):
                matches = [h for h in listing.hosts if h.id == key]
            else:
                matches = [
                    h
                    for h in listing.hosts
                    if h.name == key and (want is None or h.provider == want)
                ]
            relevant = [e for e in listing.errors if want is None or e.provider == want]
            if len(matches) > 1:
                options = ", ".join(h.ref for h in matches)
                found.append(
                    (
                        ref,
                        UsageError(
                            f"host {ref!r} exists under several providers; use one of: {options}"
                        ),
                    )
                )
            elif matches:
                found.append((ref, matches[0]))
            elif relevant:
                first = relevant[0]
                # Keep what made the provider fail (e.g. not authorised: exit 5), not just that.
                error = ROW_ERRORS.get(first.kind, UnreachableError)
                found.append(
                    (
                        ref,
                        error(
                            f"cannot tell whether host {ref!r} exists: provider "
                            f"{first.provider!r}: {first.message}"
                        ),
                    )
                )
            elif missing_ok:
                found.append((ref, None))
            else:
                where = f" in provider {want!r}" if want else ""
                found.append((ref, NotFoundError(f"no host {ref!r}{where}")))
        return found

    def resolve_host(self, ref: str, provider: str | None = None) -> Host:
        host = self.resolve_hosts([ref], provider)[0][1]
        assert host is not None
        return host

    def resolve_snapshot(self, ref: str, provider: str | None = None) -> Snapshot:
        snaps, errors = self.list_snapshots([provider] if provider else None)
        matches = [s for s in snaps if ref in (s.id, s.name)]
        if len(matches) > 1:
            options = ", ".join(f"{s.id} (of {s.host}.{s.provider})" for s in matches)
            raise UsageError(f"snapshot name {ref!r} is ambiguous; use one of the ids: {options}")
        if matches:
            return matches[0]
        if errors:
            raise UnreachableError(
                f"cannot tell whether snapshot {ref!r} exists: provider "
                f"{errors[0].provider!r}: {errors[0].message}"
            )
        raise NotFoundError(f"no snapshot {ref!r}")

    # --- running plans ----------------------------------------------------------------

    def run_plans(
        self, work: list[tuple[Backend, Plan]], labels: list[str] | None = None
    ) -> list[Outcome]:
        """Each plan on its backend, concurrently; `self.waiting` (a terminal's progress
        line) is told each unfinished one as `LABEL: the step it is on`."""
        show = self.waiting
        named = {id(pair): label for pair, label in zip(work, labels or [], strict=False)}

        def steps(pending: list[Any], seconds: float) -> None:
            if show is not None:
                show([f"{named.get(id(p), '?')}: {p[1].current}" for p in pending], seconds)

        waiting = steps if show is not None and labels is not None else None
        return fan_out(
            lambda pair: execute(pair[1], pair[0]), work, jobs=self.jobs, waiting=waiting
        )


def _collect(outcomes: list[Outcome]) -> tuple[list[Any], list[ProviderErrorRow]]:
    """Every provider's items, and an error row for each provider (or part of a pool, from
    a `Listing`) that failed."""
    items: list[Any] = []
    errors: list[ProviderErrorRow] = []
    for outcome in outcomes:
        if outcome.error is not None:
            errors.append(error_row(outcome.item, outcome.error))
        elif isinstance(outcome.value, Listing):
            items.extend(outcome.value.items)
            errors += [error_row(outcome.item, e) for e in outcome.value.errors]
        else:
            items.extend(outcome.value)
    return items, errors


def error_row(provider: str, error: BaseException) -> ProviderErrorRow:
    if isinstance(error, MngrError):
        return ProviderErrorRow(provider=provider, kind=error.kind, message=str(error))
    if isinstance(error, KeyboardInterrupt):
        raise InterruptedByUser("interrupted")
    return ProviderErrorRow(provider=provider, kind="internal", message=repr(error))


def _remember_host_names(answered: list[str], hosts: list[Host], *, complete: bool) -> None:
    """Refresh the completion cache (never the truth: only TAB reads it)."""
    target = paths.host_names_cache()
    try:
        names: dict[str, list[str]] = {}
        if not complete and target.exists():
            names = json.loads(target.read_text(encoding="utf-8"))
        for provider in answered:
            names[provider] = sorted(h.name for h in hosts if h.provider == provider)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(names), encoding="utf-8")
        os.replace(tmp, target)
    except (OSError, ValueError, AttributeError):
        pass
