"""Twenty concurrent creates of distinct names all succeed and list exactly twenty hosts:
on the local backend from twenty mngr processes at once, and on a real Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NAMES = [f"c{i:02d}" for i in range(20)]


def listed(mngr, provider: str) -> list[str]:  # noqa: ANN001
    result = mngr("host", "list", "-p", provider, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return sorted(h["name"] for h in json.loads(result.stdout)["hosts"])


def test_twenty_mngr_processes_creating_local_hosts_at_once_all_succeed(mngr) -> None:
    """One process creating twenty hosts is in tests/cli; here twenty processes race."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mngr", "host", "create", name, "-p", "local"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in NAMES
    ]
    failed = [(p.args[5], p.stderr.read()) for p in procs if p.wait(60) != 0]
    assert failed == []
    assert listed(mngr, "local") == NAMES


@pytest.mark.docker
def test_twenty_concurrent_docker_creates_all_succeed(docker_env, mngr) -> None:  # noqa: ANN001
    provider = docker_env.provider
    result = mngr("--jobs", "20", "host", "create", *NAMES, "-p", provider, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert sorted(h["name"] for h in json.loads(result.stdout)["hosts"]) == NAMES
    assert listed(mngr, provider) == NAMES
    assert len(docker_env.labelled("ps")) == 20
    destroyed = mngr("--jobs", "20", "host", "destroy", *NAMES, "-p", provider, "--yes", "--force")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert docker_env.labelled("ps") == []
