"""Provisioning with pyinfra: one pyinfra run over the hosts, each reached by mngr's connector
(`@mngr/NAME.PROVIDER`, see mngr.pyinfra_connector), and one result per host from the report
the connector writes. pyinfra's own output goes to our stderr as pyinfra prints it.

pyinfra is an optional extra: nothing here imports it; `require_pyinfra` says how to get it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mngr.errors import UsageError, VendorMissingError
from mngr.inventory import PYINFRA_PREFIX
from mngr.records import Host

DESTROYED = "destroyed (--destroy-on-failure)"  # what became of a host create --provision failed
DATA_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def require_pyinfra() -> None:
    """Exit 4 with how to install it when pyinfra is not installed."""
    try:
        import pyinfra  # noqa: F401
    except ImportError:
        from mngr.paths import install_hint

        raise VendorMissingError(
            f"provisioning needs pyinfra, which is not installed: {install_hint('provision')}"
        ) from None


def deploy_file(path: str) -> str:
    """The deploy as an absolute path (never read by pyinfra as a flag or an operation)."""
    found = Path(path)
    if not found.is_file():
        raise UsageError(f"no deploy file {path!r}")
    return str(found.resolve())


def parse_data(items: list[str]) -> dict[str, str]:
    """`--data KEY=VALUE` items: KEY a Python identifier (the deploy reads `host.data.KEY`)."""
    data: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not DATA_KEY_RE.fullmatch(key):
            raise UsageError(
                f"invalid --data {item!r}: expected KEY=VALUE, KEY a name of letters, digits "
                "and '_'"
            )
        if key.startswith("mngr_"):
            raise UsageError(f"invalid --data {item!r}: keys starting with 'mngr_' are mngr's")
        data[key] = value
    return data


@dataclass
class HostResult:
    host: Host
    operations: int = 0
    changed: int = 0
    error: str | None = None  # why this host failed, in one line
    fate: str | None = None  # at create: what became of a host whose provisioning failed


def argv(
    hosts: list[Host],
    deploy: str,
    data: dict[str, str],
    *,
    dry_run: bool,
    jobs: int,
    config_file: str | None,
    report: str,
) -> list[str]:
    """The pyinfra run: this interpreter's pyinfra (where mngr's connector is registered);
    the connector appends each host's results to `report`."""
    words = [sys.executable, "-m", "pyinfra", ",".join(target(h) for h in hosts), deploy]
    words += ["--parallel", str(jobs), "--dry" if dry_run else "--yes"]
    data = {**data, "mngr_report": report}
    if config_file:
        data["mngr_config"] = config_file
    for key, value in data.items():
        words += ["--data", f"{key}={value}"]
    return words


def target(host: Host) -> str:
    return f"{PYINFRA_PREFIX}/{host.ref}"


def run(hosts: list[Host], deploy: str, data: dict[str, str], **how: Any) -> list[HostResult]:
    """Run pyinfra (all its output on our stderr, as it prints it) and say how each host
    fared. `how`: as for `argv`."""
    with tempfile.TemporaryDirectory(prefix="mngr-provision-") as folder:
        report = Path(folder) / "report.jsonl"
        command = argv(hosts, deploy, data, report=str(report), **how)
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=2, check=False)
        except OSError as exc:
            raise VendorMissingError(f"could not start pyinfra: {exc}") from None
        events = report.read_text(encoding="utf-8") if report.exists() else ""
    return results(hosts, events, done.returncode)


def results(hosts: list[Host], events: str, returncode: int) -> list[HostResult]:
    """Per host, from the connector's report (JSON lines `{"host", "op", "changed"}` or
    `{"host", "error"}`): what ran, what changed, the first failure. pyinfra exits non-zero
    when any host failed: that alone fails only a host it said nothing about."""
    by_host: dict[str, list[dict[str, Any]]] = {}
    for line in events.splitlines():
        try:
            event = json.loads(line)
            by_host.setdefault(str(event["host"]), []).append(event)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a killed run says nothing reliable
    found = []
    for host in hosts:
        mine = by_host.get(target(host), [])
        ops = [e for e in mine if "op" in e]
        result = HostResult(host, len(ops), sum(bool(e.get("changed")) for e in ops))
        errors = [e for e in mine if "error" in e]
        if errors and "op" in errors[0]:
            result.error = f"operation {errors[0]['op']!r} failed (see pyinfra's output above)"
        elif errors:
            result.error = str(errors[0]["error"])
        elif returncode != 0 and not mine:  # pyinfra stopped before it reached this host
            result.error = f"pyinfra failed (exit {returncode}; see its output above)"
        found.append(result)
    return found
