"""Listing and verbs across several providers through the real runner and a stand-in
vendor CLI: one broken, slow or missing provider never blocks or empties the others."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest


@pytest.fixture
def two_good_one_bad(fake_providers, mngr):
    def make(fault: str) -> None:
        fake_providers(good=" ", good2=" ", bad=fault)
        assert mngr("host", "create", "a", "-p", "good").exit_code == 0
        assert mngr("host", "create", "b", "-p", "good2").exit_code == 0

    return make


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("list:fail", "error"),
        ("list:garbage", "bad-output"),
        ("list:truncated", "bad-output"),
        ("list:hang", "timeout"),
        ("list:kill", "error"),
        ("list:denied", "unauthorised"),
    ],
)
def test_list_keeps_other_providers_and_exits_6(two_good_one_bad, mngr, fault, kind) -> None:
    two_good_one_bad(fault)
    result = mngr("host", "list", "--format", "json")
    assert result.exit_code == 6
    doc = json.loads(result.stdout)
    assert sorted(h["name"] for h in doc["hosts"]) == ["a", "b"]
    [error] = doc["errors"]
    assert error["provider"] == "bad" and error["kind"] == kind
    assert "\n" not in error["message"]


def test_missing_vendor_cli_is_an_error_row_for_list_and_exit_4_for_verbs(
    fake_providers, mngr, user_settings: Path
) -> None:
    fake_providers(good=" ")
    user_settings.write_text(
        user_settings.read_text()
        + '\n[providers.gone]\nbackend = "fakecli"\nstate_dir = "/tmp/x"\n'
        + 'binary = "/nonexistent/vendor"\n'
    )
    assert mngr("host", "create", "a", "-p", "good").exit_code == 0
    listed = mngr("host", "list", "--format", "json")
    assert listed.exit_code == 6
    doc = json.loads(listed.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["a"]
    assert doc["errors"][0]["kind"] == "vendor-missing"
    created = mngr("host", "create", "x", "-p", "gone")
    assert created.exit_code == 4
    assert "not found on PATH" in created.stderr and "Traceback" not in created.stderr


def test_list_fans_out_concurrently(fake_providers, mngr, monkeypatch) -> None:
    monkeypatch.setenv("FAKEVENDOR_SLOW_S", "1")
    fake_providers(**{f"p{i}": "list:slow" for i in range(6)})
    start = time.monotonic()
    assert mngr("host", "list").exit_code == 0
    assert time.monotonic() - start < 4  # six 1 s providers, not 6 s


def test_failed_create_step_runs_the_undo(fake_providers, mngr) -> None:
    dirs = fake_providers(p="tag:fail")
    result = mngr("host", "create", "a", "-p", "p")
    assert result.exit_code == 1
    calls = (dirs["p"] / "calls.log").read_text().splitlines()
    assert calls[-1] == "delete a"
    assert not list(dirs["p"].glob("*.host"))


def test_conflicting_create_leaves_the_existing_host(fake_providers, mngr) -> None:
    dirs = fake_providers(p=" ")
    assert mngr("host", "create", "a", "-p", "p").exit_code == 0
    again = mngr("host", "create", "a", "-p", "p")
    assert again.exit_code == 1 and "exists" in again.stderr
    assert (dirs["p"] / "a.host").exists()


def test_unauthorised_create_exits_5(fake_providers, mngr) -> None:
    fake_providers(p="create:denied")
    assert mngr("host", "create", "a", "-p", "p").exit_code == 5


def test_unsupported_verb_is_refused_before_any_vendor_call(fake_providers, mngr) -> None:
    dirs = fake_providers(p=" ")
    assert mngr("host", "create", "a", "-p", "p").exit_code == 0
    before = (dirs["p"] / "calls.log").read_text()
    result = mngr("host", "snapshot", "create", "a")
    assert result.exit_code == 2
    assert "cannot snapshot: the fake vendor keeps no filesystem" in result.stderr
    # only the `list` that resolved the host ran; no snapshot call reached the vendor
    assert (dirs["p"] / "calls.log").read_text() == before + "list\n"


def test_backend_flag_of_another_backend_is_refused(fake_providers, mngr) -> None:
    fake_providers(p=" ")
    result = mngr("host", "create", "a", "-p", "local", "--widgets", "3")
    assert result.exit_code == 2
    assert "--widgets is not supported by backend 'local'" in result.stderr


def test_dry_run_prints_commands_and_runs_none(fake_providers, mngr) -> None:
    dirs = fake_providers(p=" ")
    result = mngr("host", "create", "a", "-p", "p", "--dry-run")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and "fakevendor.py create a host-" in lines[0]
    assert not (dirs["p"] / "calls.log").exists()


def test_provider_check(fake_providers, mngr) -> None:
    fake_providers(p=" ", q="whoami:fail")
    result = mngr("provider", "check", "p", "q", "--format", "json")
    rows = {r["name"]: r for r in json.loads(result.stdout)["providers"]}
    assert rows["p"]["ok"] and rows["p"]["details"] == {"user": "tester"}
    assert not rows["q"]["ok"] and result.exit_code == 1


def test_unreachable_builtin_provider_says_how_to_switch_it_off(
    fake_providers, mngr, monkeypatch, tmp_path: Path
) -> None:
    from mngr import config

    fake_providers()
    template = {
        "name": "builtin_fake",
        "backend": "fakecli",
        "timeout_s": 1,
        "state_dir": str(tmp_path / "b"),
        "fault": "list:hang",
    }
    monkeypatch.setitem(config.BUILTIN_TEMPLATES, "builtin_fake", (template, None))
    result = mngr("host", "list", "--format", "json")
    assert result.exit_code == 6
    [row] = result.json()["errors"]
    assert row["kind"] == "timeout" and "enabled = false" in row["message"]


def test_provider_list_and_show_say_what_a_backend_cannot_do(fake_providers, mngr) -> None:
    fake_providers(p=" ")
    table = mngr("provider", "list").stdout
    assert "CANNOT" in table and "snapshot, stop/start, exec" in table
    shown = mngr("provider", "show", "p", "--format", "json").json()["provider"]
    assert shown["unsupported"]["snapshot"] == "the fake vendor keeps no filesystem"
