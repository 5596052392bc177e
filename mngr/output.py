"""Rendering: tables for people, JSON / JSONL for scripts. Data to stdout, messages to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mngr.records import SCHEMA_VERSION, Host, ProviderErrorRow, Snapshot

FORMATS = ("table", "json", "jsonl")

# Piped output is never wrapped or truncated: a script gets whole ids.
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 4096)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def message(text: str) -> None:
    stderr.print(text, markup=False)


def warn(text: str) -> None:
    stderr.print(f"warning: {text}", style="yellow", markup=False)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def host_dicts(hosts: Iterable[Host]) -> list[dict[str, Any]]:
    return [h.model_dump(mode="json") for h in hosts]


def render_hosts(
    hosts: list[Host], errors: list[ProviderErrorRow], fmt: str = "table", quiet: bool = False
) -> None:
    if quiet:
        for host in hosts:
            sys.stdout.write(host.name + "\n")
    elif fmt == "json":
        emit_json(
            {
                "schema_version": SCHEMA_VERSION,
                "hosts": host_dicts(hosts),
                "errors": [e.model_dump() for e in errors],
            }
        )
    elif fmt == "jsonl":
        for row in host_dicts(hosts):
            emit_json({"schema_version": SCHEMA_VERSION, **row})
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("NAME", "PROVIDER", "STATE", "IMAGE", "CREATED", "TAGS"):
            table.add_column(column, overflow="fold")
        for h in hosts:
            tags = ",".join(f"{k}={v}" for k, v in sorted(h.tags.items()))
            table.add_row(
                *map(
                    Text,
                    (h.name, h.provider, str(h.state), h.image or "", h.created_at or "", tags),
                )
            )
        if hosts:
            stdout.print(table)
        elif not errors:
            message("no hosts")
    if fmt != "json":
        for e in errors:
            stderr.print(f"error: provider {e.provider}: {e.message}", style="red", markup=False)


def render_snapshots(
    snaps: list[Snapshot], errors: list[ProviderErrorRow], fmt: str = "table", quiet: bool = False
) -> None:
    if quiet:
        for snap in snaps:
            sys.stdout.write(snap.id + "\n")
    elif fmt == "json":
        emit_json(
            {
                "schema_version": SCHEMA_VERSION,
                "snapshots": [s.model_dump(mode="json") for s in snaps],
                "errors": [e.model_dump() for e in errors],
            }
        )
    elif fmt == "jsonl":
        for snap in snaps:
            emit_json({"schema_version": SCHEMA_VERSION, **snap.model_dump(mode="json")})
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("ID", "NAME", "HOST", "PROVIDER", "CREATED"):
            table.add_column(column)
        for s in snaps:
            table.add_row(*map(Text, (s.id, s.name, s.host, s.provider, s.created_at or "")))
        if snaps:
            stdout.print(table)
        elif not errors:
            message("no snapshots")
    if fmt != "json":
        for e in errors:
            stderr.print(f"error: provider {e.provider}: {e.message}", style="red", markup=False)


def render_rows(rows: list[dict[str, Any]], columns: list[str], fmt: str, key: str) -> None:
    """Generic listing (providers, config): a table, or `{schema_version, key: rows}`."""
    if fmt == "json":
        emit_json({"schema_version": SCHEMA_VERSION, key: rows})
        return
    if fmt == "jsonl":
        for row in rows:
            emit_json(row)
        return
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column.upper())
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    stdout.print(table)


def _cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, list):
        return Text(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return Text(", ".join(f"{k}={v}" for k, v in value.items()))
    return Text(str(value))
