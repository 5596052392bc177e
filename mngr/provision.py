"""Provisioning with pyinfra: one pyinfra run over the hosts, each reached by mngr's connector
(`@mngr/NAME.PROVIDER`, see mngr.pyinfra_connector), and one result per host read from
pyinfra's own JSON (`--json`). pyinfra's progress goes to our stderr as pyinfra prints it.

pyinfra is an optional extra: nothing here imports it; `require_pyinfra` says how to get it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mngr.errors import UsageError, VendorMissingError
from mngr.inventory import PYINFRA_PREFIX
from mngr.records import Host

INSTALL_HINT = "pip install 'mngr[provision]' (or ./install.sh --with provision)"
DATA_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def require_pyinfra() -> None:
    """Exit 4 with how to install it when pyinfra is not installed."""
    try:
        import pyinfra  # noqa: F401
    except ImportError:
        raise VendorMissingError(
            f"provisioning needs pyinfra, which is not installed: {INSTALL_HINT}"
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


def argv(
    hosts: list[Host],
    deploy: str,
    data: dict[str, str],
    *,
    dry_run: bool,
    jobs: int,
    config_file: str | None,
) -> list[str]:
    """The pyinfra run: this interpreter's pyinfra (where mngr's connector is registered)."""
    words = [sys.executable, "-m", "pyinfra", ",".join(target(h) for h in hosts), deploy]
    words += ["--parallel", str(jobs)]
    words += ["--dry"] if dry_run else ["--yes", "--json"]
    if config_file:
        data = {**data, "mngr_config": config_file}
    for key, value in data.items():
        words += ["--data", f"{key}={value}"]
    return words


def target(host: Host) -> str:
    return f"{PYINFRA_PREFIX}/{host.ref}"


def run(hosts: list[Host], command: list[str], *, dry_run: bool) -> list[HostResult]:
    """Run pyinfra (its output on our stderr) and say how each host fared."""
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, check=False
        )
    except OSError as exc:
        raise VendorMissingError(f"could not start pyinfra: {exc}") from None
    if dry_run:
        why = None if done.returncode == 0 else f"pyinfra failed (exit {done.returncode})"
        return [HostResult(h, error=why) for h in hosts]
    return results(hosts, done.stdout, done.returncode)


def results(hosts: list[Host], stdout: str, returncode: int) -> list[HostResult]:
    """Per host, from pyinfra's `--json` results: what ran, what changed, the first failed
    operation. A host in no operation of a deploy that has some did not connect."""
    try:
        payload: Any = json.loads(stdout)
        operations = payload["results"]["operations"]
    except (ValueError, KeyError, TypeError):
        why = f"pyinfra stopped before the deploy ran (exit {returncode}; see its output above)"
        return [HostResult(h, error=why) for h in hosts]
    found = []
    for host in hosts:
        name = target(host)
        mine = [op for op in operations if name in (*op["success"], *op["error"], *op["no_change"])]
        result = HostResult(
            host,
            operations=len(mine),
            changed=sum(name in op["success"] for op in mine),
        )
        failed = [op["name"] for op in mine if name in op["error"]]
        if failed:
            result.error = f"operation {failed[0]!r} failed (see pyinfra's output above)"
        elif operations and not mine:
            result.error = "pyinfra could not connect to it (see its output above)"
        elif not operations and returncode != 0:
            result.error = f"pyinfra failed (exit {returncode}; see its output above)"
        found.append(result)
    return found
