"""destroy --purge and --dry-run on a real Docker engine: a snapshot image another host runs
from is kept (named by that host), each item is reported, and a dry run says so first."""

from __future__ import annotations

import time

import pytest

from tests.docker.conftest import DockerEnv

pytestmark = pytest.mark.docker


def snapshot_names(mngr, p: str) -> list[str]:
    snaps = mngr("host", "snapshot", "list", "-p", p, "-f", "json").json()["snapshots"]
    return sorted(s["name"] for s in snaps)


def test_purge_keeps_a_snapshot_another_host_runs_from_and_reports_each_item(
    docker_env: DockerEnv, mngr
) -> None:
    p = docker_env.provider
    assert mngr("host", "create", "src", "-p", p).exit_code == 0
    assert mngr("host", "snapshot", "create", "src", "-p", p, "-n", "shared").exit_code == 0
    assert mngr("host", "snapshot", "create", "src", "-p", p, "-n", "alone").exit_code == 0
    made = mngr("host", "create", "child", "-p", p, "--from-snapshot", "shared")
    assert made.exit_code == 0, made.stderr

    dry = mngr("host", "destroy", "src", "-p", p, "--force", "--purge", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "would keep snapshot" in dry.stderr and "(shared): used by host child." in dry.stderr
    assert "docker" in dry.stdout and "rmi" in dry.stdout

    gone = mngr("host", "destroy", "src", "-p", p, "--force", "--purge", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert f"destroyed: src.{p}" in gone.stderr
    assert "deleted snapshot: " in gone.stderr and "(alone)" in gone.stderr
    assert (
        "kept snapshot snap-" in gone.stderr and f"(shared): used by host child.{p}" in gone.stderr
    )
    assert "error" not in gone.stderr
    for line in gone.stderr.splitlines():  # no container id anywhere: hosts are named
        assert not any(word.isalnum() and len(word) == 64 for word in line.split())
    assert snapshot_names(mngr, p) == ["shared"]
    listed = mngr("host", "list", "-p", p, "-q").stdout.split()
    assert listed == ["child"]

    # The kept snapshot is refused by delete while `child` runs from it, in both runs.
    dry = mngr("host", "snapshot", "delete", "shared", "-p", p, "--dry-run")
    assert dry.exit_code == 1 and f"used by host child.{p}" in dry.stderr
    refused = mngr("host", "snapshot", "delete", "shared", "-p", p, "--yes")
    assert refused.exit_code == 1 and f"used by host child.{p}" in refused.stderr
    assert snapshot_names(mngr, p) == ["shared"]

    assert mngr("host", "destroy", "child", "-p", p, "--force", "--yes").exit_code == 0
    assert mngr("host", "snapshot", "delete", "shared", "-p", p, "--yes").exit_code == 0
    assert docker_env.labelled("image ls") == []


def test_purge_of_two_hosts_where_one_runs_from_the_others_snapshot_deletes_it(
    docker_env: DockerEnv, mngr
) -> None:
    p = docker_env.provider
    assert mngr("host", "create", "src", "-p", p).exit_code == 0
    assert mngr("host", "snapshot", "create", "src", "-p", p, "-n", "base").exit_code == 0
    assert mngr("host", "create", "child", "-p", p, "--from-snapshot", "base").exit_code == 0
    gone = mngr("host", "destroy", "src", "child", "-p", p, "--force", "--purge", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert "(base)" in gone.stderr and "deleted snapshot" in gone.stderr
    assert docker_env.labelled("ps") == [] and docker_env.labelled("image ls") == []


def test_dry_run_of_destroy_of_a_missing_docker_host_exits_3_and_names_it(
    docker_env: DockerEnv, mngr
) -> None:
    p = docker_env.provider
    assert mngr("host", "create", "a", "-p", p).exit_code == 0
    dry = mngr("host", "destroy", "a", "ghost", "-p", p, "--dry-run")
    assert dry.exit_code == 3
    assert "rm" in dry.stdout and "would be refused: ghost" in dry.stderr
    assert mngr("host", "list", "-p", p, "-q").stdout.split() == ["a"]


def test_a_hosts_json_lists_the_snapshots_that_exist_and_not_an_earlier_hosts(
    docker_env: DockerEnv, mngr
) -> None:
    p = docker_env.provider

    def record(command: str) -> dict:
        if command == "show":
            return mngr("host", "show", "h", "-p", p, "-f", "json").json()["host"]
        [host] = mngr("host", "list", "-p", p, "-f", "json").json()["hosts"]
        return host

    assert mngr("host", "create", "h", "-p", p).exit_code == 0
    made = mngr("host", "snapshot", "create", "h", "-p", p, "-n", "one", "-f", "json").json()
    snap_id = made["snapshots"][0]["id"]
    assert record("list")["snapshots"] == [snap_id] == record("show")["snapshots"]
    assert mngr("host", "destroy", "h", "-p", p, "--force", "--yes").exit_code == 0
    time.sleep(1.1)  # the new host is younger than the snapshot, to the second
    assert mngr("host", "create", "h", "-p", p).exit_code == 0
    assert record("list")["snapshots"] == [] == record("show")["snapshots"]
    assert mngr("host", "snapshot", "delete", snap_id, "--yes").exit_code == 0


def test_the_hosts_that_pin_snapshots_are_listed_once_per_provider(
    docker_env: DockerEnv, mngr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """destroy --purge of several hosts and snapshot delete of several snapshots ask which
    hosts run from a snapshot with one listing of the provider, not one per item."""
    from mngr.service import Service

    p = docker_env.provider
    for name in ("a", "b"):
        assert mngr("host", "create", name, "-p", p).exit_code == 0
        for snap in (f"{name}1", f"{name}2"):
            assert mngr("host", "snapshot", "create", name, "-p", p, "-n", snap).exit_code == 0
    listed: list[str] = []
    real = Service.hosts_of_provider

    def counted(self: Service, name: str) -> list:
        listed.append(name)
        return real(self, name)

    monkeypatch.setattr(Service, "hosts_of_provider", counted)
    deleted = mngr("host", "snapshot", "delete", "a1", "b1", "-p", p, "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert listed == [p]
    listed.clear()
    gone = mngr("host", "destroy", "a", "b", "-p", p, "--force", "--purge", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert gone.stderr.count("deleted snapshot") == 2 and listed == [p]
    assert docker_env.labelled("ps") == [] and docker_env.labelled("image ls") == []
