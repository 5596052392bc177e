"""`--dry-run` says when the real run would be refused, and exits as the real run does."""

from __future__ import annotations

import json


def names(mngr) -> list[str]:
    return mngr("host", "list", "-q").stdout.split()


def test_dry_run_of_destroy_with_a_missing_host_prints_the_plan_and_exits_3(mngr) -> None:
    assert mngr("host", "create", "a").exit_code == 0
    dry = mngr("host", "destroy", "a", "nosuch", "--dry-run")
    assert dry.exit_code == 3
    assert "remove directory" in dry.stdout  # what it would do for `a`
    assert "would be refused: nosuch: no host 'nosuch'" in dry.stderr
    assert "change nothing" in dry.stderr
    real = mngr("host", "destroy", "a", "nosuch", "--yes")
    assert real.exit_code == 3 and "no host 'nosuch'" in real.stderr
    assert names(mngr) == ["a"]  # the real run refused the whole command


def test_dry_run_with_missing_ok_names_the_missing_host_and_exits_0(mngr) -> None:
    assert mngr("host", "create", "a").exit_code == 0
    dry = mngr("host", "destroy", "a", "nosuch", "--missing-ok", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "nosuch: no such host, nothing to do" in dry.stderr and "refused" not in dry.stderr
    assert names(mngr) == ["a"]


def test_dry_run_of_stop_refuses_a_host_whose_provider_cannot_stop(
    fake_providers, user_settings, mngr
) -> None:
    fake_providers(p="")
    with user_settings.open("a") as f:
        f.write('\n[providers.local]\nbackend = "local"\n')
    assert mngr("host", "create", "a", "-p", "local").exit_code == 0
    assert mngr("host", "create", "b", "-p", "p").exit_code == 0
    dry = mngr("host", "stop", "a.local", "b.p", "--dry-run")
    assert dry.exit_code == 2
    assert "stop processes of a" in dry.stdout
    assert "would be refused: b.p: backend 'fakecli' cannot stop/start" in dry.stderr
    real = mngr("host", "stop", "a.local", "b.p")
    assert real.exit_code == 2 and "cannot stop/start" in real.stderr
    state = json.loads(mngr("host", "list", "-p", "local", "-f", "json").stdout)["hosts"]
    assert [h["state"] for h in state] == ["running"]  # `a` was not stopped either


def test_dry_run_of_stop_of_a_stopped_host_says_nothing_to_do(mngr) -> None:
    assert mngr("host", "create", "a").exit_code == 0
    assert mngr("host", "stop", "a").exit_code == 0
    dry = mngr("host", "stop", "a", "--dry-run")
    assert dry.exit_code == 0 and "a.local: already stopped, nothing to do" in dry.stderr
    assert dry.stdout == ""


def test_dry_run_of_snapshot_delete_names_each_missing_snapshot(mngr) -> None:
    assert mngr("host", "create", "a").exit_code == 0
    assert mngr("host", "snapshot", "create", "a", "-n", "one").exit_code == 0
    dry = mngr("host", "snapshot", "delete", "one", "ghost", "--dry-run")
    assert dry.exit_code == 3
    assert "would be refused: ghost: no snapshot 'ghost'" in dry.stderr
    real = mngr("host", "snapshot", "delete", "one", "ghost", "--yes")
    assert real.exit_code == 3
    listed = mngr("host", "snapshot", "list", "-f", "json").json()["snapshots"]
    assert [s["name"] for s in listed] == ["one"]  # nothing was deleted


def test_dry_run_of_destroy_purge_lists_the_snapshot_deletions(mngr) -> None:
    assert mngr("host", "create", "a").exit_code == 0
    assert mngr("host", "snapshot", "create", "a", "-n", "one").exit_code == 0
    dry = mngr("host", "destroy", "a", "--purge", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "remove directory" in dry.stdout and "snapshot" in dry.stdout
    real = mngr("host", "destroy", "a", "--purge", "--yes")
    assert real.exit_code == 0, real.stderr
    assert "destroyed: a.local" in real.stderr
    assert "deleted snapshot: " in real.stderr and "(one)" in real.stderr
    assert mngr("host", "snapshot", "list", "-f", "json").json()["snapshots"] == []
