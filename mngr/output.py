"""Rendering: aligned tables for people, JSON / JSONL for scripts. Data goes to stdout,
messages and errors to stderr. Plain text, so a 10,000-host table renders in well under a
second and no terminal-UI library is imported on the listing path. Colour only on a
terminal and never with NO_COLOR; control characters from vendors are never echoed raw."""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from mngr.records import SCHEMA_VERSION, Host, ProviderErrorRow, Snapshot

if TYPE_CHECKING:
    from mngr.gc import GcReport

FORMATS = ("table", "json", "jsonl")
_RED, _BOLD, _RESET = "\x1b[31m", "\x1b[1m", "\x1b[0m"


def _colour(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def out(text: str) -> None:
    """Write data to stdout. A reader that went away (`mngr host list | head -1`) is not an
    error of ours: the rest of the output is dropped and the command ends as it would."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        os.close(devnull)


def waiting_line(pending: list[Any], seconds: float) -> None:
    """On a terminal, after a second: which providers mngr is still waiting for (one line,
    redrawn; cleared when the wait ends)."""
    if seconds < 1.0:
        return
    if pending:
        import shutil

        names = ", ".join(safe_line(str(p)) for p in pending[:4])
        more = f" and {len(pending) - 4} more" if len(pending) > 4 else ""
        line = f"waiting for {names}{more} ({seconds:.0f}s)"
        width = shutil.get_terminal_size((80, 24)).columns - 1  # a wrapped line cannot redraw
        if len(line) > width:
            line = line[: width - 1] + "…"
        sys.stderr.write(f"\r\033[K{line}")
    else:
        sys.stderr.write("\r\033[K")
    sys.stderr.flush()


def message(text: str) -> None:
    sys.stderr.write(safe(text) + "\n")


def error(text: str) -> None:
    line = "error: " + safe(text)
    sys.stderr.write((_RED + line + _RESET if _colour(sys.stderr) else line) + "\n")


def emit_json(obj: Any) -> None:
    out(json_text(obj) + "\n")


def json_text(obj: Any) -> str:
    """JSON whose every non-printable character is a `\\uXXXX` escape: json escapes only
    U+0000-U+001F, so a C1 control (U+009B is CSI) or a bidi override would reach the
    terminal raw."""
    text = json.dumps(obj, ensure_ascii=False)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _json_escape(c) for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def safe(text: str) -> str:
    """Text with control characters (terminal escapes) replaced, newlines kept."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


def safe_line(text: str) -> str:
    """One line of text: control characters and newlines replaced (a name with a newline
    in it must not read as two names)."""
    return safe(text).replace("\n", "?")


def _width(text: str) -> int:
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[safe(_cell(v)).replace("\n", " ") for v in row] for row in rows]
    widths = [_width(c) for c in columns]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], _width(value))

    def line(values: Sequence[str]) -> str:
        parts = [v + " " * (w - _width(v)) for v, w in zip(values, widths, strict=True)]
        return "  ".join(parts).rstrip()

    header = line([c.upper() for c in columns])
    lines = [_BOLD + header + _RESET if _colour(sys.stdout) else header]
    lines += [line(row) for row in cells]
    out("\n".join(lines) + "\n")


def host_dicts(hosts: Iterable[Host]) -> list[dict[str, Any]]:
    return [h.to_json() for h in hosts]


def _errors(errors: list[ProviderErrorRow]) -> None:
    for e in errors:
        error(f"provider {e.provider}: {e.message}")


def ago(stamp: str | None, now: float | None = None) -> str:
    """`2026-12-01T10:00:00Z` as "3m ago" (a table's reader wants the age, not the instant);
    what does not parse is shown as it is."""
    import time
    from datetime import datetime

    if not stamp:
        return ""
    try:
        seconds = (now or time.time()) - datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return stamp
    if seconds < 0:
        return stamp
    for unit, size, limit in (("s", 1, 60), ("m", 60, 3600), ("h", 3600, 172800)):
        if seconds < limit:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds // 86400)}d ago"


def _clip(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


def render_hosts(
    hosts: list[Host],
    errors: list[ProviderErrorRow],
    fmt: str = "table",
    quiet: bool = False,
    wide: bool = False,
) -> None:
    """`wide`: the table with every value whole (times as written); else ages and values
    clipped, so a row fits 80 columns."""
    if quiet:
        out("".join(safe_line(h.name) + "\n" for h in hosts))
    elif fmt == "json":
        emit_json(
            {
                "schema_version": SCHEMA_VERSION,
                "hosts": host_dicts(hosts),
                "errors": [e.to_json() for e in errors],
            }
        )
    elif fmt == "jsonl":
        for row in host_dicts(hosts):
            emit_json({"schema_version": SCHEMA_VERSION, **row})
    elif hosts:
        columns = ("name", "provider", "state", "image", "created", "tags")
        if wide:
            rows = [
                (h.name, h.provider, h.state.value, h.image, h.created_at, _tags(h.tags))
                for h in hosts
            ]
        else:  # ages, and long values clipped: a row fits 80 columns
            rows = [
                (
                    h.name,
                    h.provider,
                    h.state.value,
                    _clip(h.image, 20),
                    ago(h.created_at),
                    _clip(_tags(h.tags), 24),
                )
                for h in hosts
            ]
        if any(h.idle_timeout_s for h in hosts):  # the idle columns only where one is set
            columns += ("idle_timeout", "last_activity")
            rows = [(*row, *_idle(h, wide)) for row, h in zip(rows, hosts, strict=True)]
        table(columns, rows)
    elif not errors:
        message("no hosts")
    if fmt != "json":
        _errors(errors)


def _idle(host: Host, wide: bool = False) -> tuple[str | None, str | None]:
    from mngr.resources import duration_text

    if not host.idle_timeout_s:
        return None, None
    last = host.last_activity_at if wide else ago(host.last_activity_at)
    return duration_text(host.idle_timeout_s), last


def _tags(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def render_snapshots(
    snaps: list[Snapshot],
    errors: list[ProviderErrorRow],
    fmt: str = "table",
    quiet: bool = False,
    wide: bool = False,
) -> None:
    if quiet:
        out("".join(safe_line(s.id) + "\n" for s in snaps))
    elif fmt == "json":
        emit_json(
            {
                "schema_version": SCHEMA_VERSION,
                "snapshots": [s.to_json() for s in snaps],
                "errors": [e.to_json() for e in errors],
            }
        )
    elif fmt == "jsonl":
        for snap in snaps:
            emit_json({"schema_version": SCHEMA_VERSION, **snap.to_json()})
    elif snaps:
        table(
            ("id", "name", "host", "provider", "created"),
            (
                (s.id, s.name, s.host, s.provider, s.created_at if wide else ago(s.created_at))
                for s in snaps
            ),
        )
    elif not errors:
        message("no snapshots")
    if fmt != "json":
        _errors(errors)


def render_gc(report: GcReport, fmt: str) -> None:
    """What gc found: each orphan with its action (delete, or keep and why)."""
    from dataclasses import asdict

    rows = [{**asdict(o), "action": "delete", "kept_because": None} for o in report.delete]
    rows += [{**asdict(o), "action": "keep", "kept_because": why} for o, why in report.kept]
    if fmt == "json":
        emit_json(
            {
                "schema_version": SCHEMA_VERSION,
                "orphans": rows,
                "skipped": report.skipped,
                "errors": [e.to_json() for e in report.errors],
            }
        )
    elif fmt == "jsonl":
        for row in rows:
            emit_json({"schema_version": SCHEMA_VERSION, **row})
    elif rows:
        table(
            ("action", "provider", "kind", "name", "size", "created", "why"),
            (
                (
                    r["action"],
                    r["provider"],
                    r["kind"],
                    r["name"] or r["id"],
                    _size(r["size_bytes"]),
                    r["created_at"],
                    r["why"] + (f"; kept: {r['kept_because']}" if r["kept_because"] else ""),
                )
                for r in rows
            ),
        )
    elif not report.errors:
        message("nothing to collect")
    if fmt != "json":
        for provider, why in report.skipped.items():
            message(f"provider {provider}: not looked at: {why}")
        _errors(report.errors)


def _size(size: float | None) -> str:
    """Bytes for a person, in binary units (as `--memory 2g` means GiB): `1.5 MiB`."""
    if size is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def render_rows(rows: list[dict[str, Any]], columns: list[str], fmt: str, key: str) -> None:
    """Generic listing (providers, config): a table, or `{schema_version, key: rows}`."""
    if fmt == "json":
        emit_json({"schema_version": SCHEMA_VERSION, key: rows})
    elif fmt == "jsonl":
        for row in rows:
            emit_json(row)
    else:
        table(columns, ([row.get(c) for c in columns] for row in rows))


def render_mapping(values: dict[str, Any], indent: str = "") -> None:
    """`key: value` lines (e.g. `provider show`); a table's keys one a line below it."""
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out(f"{indent}{safe_line(str(key))}:\n")
            render_mapping(value, indent + "  ")
        else:
            out(f"{indent}{safe_line(str(key))}: {safe_line(_cell(value))}\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


class TransferProgress:
    """Bytes moved and the rate, redrawn on one stderr line (at most 10 times a second).
    Built only for a terminal: scripts and `--format json` get nothing extra."""

    def __init__(self, stream: Any = None) -> None:
        import time

        self._clock = time.monotonic
        self.stream = stream or sys.stderr
        self.started = self._clock()
        self._drawn = 0.0

    def __call__(self, done: int) -> None:
        now = self._clock()
        if now - self._drawn < 0.1:
            return
        self._drawn = now
        rate = done / max(now - self.started, 1e-6)
        self.stream.write(f"\r\x1b[K{_size(done)}  {_size(rate)}/s")
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
