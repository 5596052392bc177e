"""The whole Modal lifecycle through the CLI: mngr -> real runner -> real shim subprocess ->
the `modal` test double. Includes stop/start through a snapshot and a listed stopped host."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.modal.conftest import TOKEN_ID, TOKEN_SECRET


def hosts(cli, *providers: str) -> dict[str, dict[str, Any]]:
    args = [a for p in providers or ("cloud",) for a in ("-p", p)]
    listed = cli("host", "list", "--format", "json", *args)
    assert listed.exit_code == 0, listed.stderr
    return {h["name"]: h for h in json.loads(listed.stdout)["hosts"]}


def test_the_whole_lifecycle(cli, modal_settings, fake_modal) -> None:
    created = cli(
        "host",
        "create",
        "web",
        "-p",
        "cloud",
        "--cpus",
        "2",
        "--memory",
        "4g",
        "--gpu",
        "T4",
        "--timeout",
        "3600",
        "--region",
        "us-east",
        "--tag",
        "team=ml",
        "--format",
        "json",
    )
    assert created.exit_code == 0, created.stderr
    [box] = fake_modal.sandboxes()
    assert box["spec"] == {
        "cpu": 2.0,
        "memory": 4096,
        "gpu": "T4",
        "timeout": 3600,
        "region": "us-east",
    }

    web = hosts(cli)["web"]
    assert web["state"] == "running" and web["backend"] == "modal" and web["provider"] == "cloud"
    assert web["tags"] == {"team": "ml"} and web["image"] == "debian_slim"
    assert web["resources"] == {"cpus": 2.0, "memory_gb": 4.0, "gpus": "T4", "disk_gb": None}
    assert web["id"].startswith("host-") and web["address"]["sandbox_id"] == box["id"]

    ran = cli("host", "exec", "web", "--", "sh", "-c", "echo hello > greeting; echo out; exit 9")
    assert ran.exit_code == 9 and ran.stdout == "out\n"

    stopped = cli("host", "stop", "web")
    assert stopped.exit_code == 0, stopped.stderr
    assert fake_modal.sandboxes(running=True) == []  # Modal's side: snapshot, then terminate
    web = hosts(cli)["web"]
    assert web["state"] == "stopped" and web["tags"] == {"team": "ml"}
    assert len(web["snapshots"]) == 1
    refused = cli("host", "exec", "web", "--", "true")
    assert refused.exit_code == 1 and "start it first: mngr host start web.cloud" in refused.stderr
    assert cli("host", "list", "-q", "-p", "cloud", "--state", "stopped").stdout == "web\n"

    started = cli("host", "start", "web")
    assert started.exit_code == 0, started.stderr
    again = hosts(cli)["web"]
    assert again["state"] == "running" and again["id"] == web["id"]
    assert again["address"]["sandbox_id"] != box["id"]  # a new sandbox, from the snapshot
    assert again["resources"]["gpus"] == "T4"
    read = cli("host", "exec", "web", "--", "cat", "greeting")
    assert read.exit_code == 0 and read.stdout == "hello\n"

    snap = cli("host", "snapshot", "create", "web", "--name", "base", "--format", "json")
    assert snap.exit_code == 0, snap.stderr
    listed = cli("host", "snapshot", "list", "web", "-p", "cloud", "--format", "json")
    names = sorted(s["name"] for s in json.loads(listed.stdout)["snapshots"])
    assert names[0] == "base" and names[1].startswith("web-stop-")
    assert cli("host", "snapshot", "delete", "base", "-p", "cloud", "--yes").exit_code == 0
    listed = cli("host", "snapshot", "list", "web", "-p", "cloud", "--format", "json")
    assert [s["name"] for s in json.loads(listed.stdout)["snapshots"]] == names[1:]

    destroyed = cli("host", "destroy", "web", "--yes")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert hosts(cli) == {} and fake_modal.sandboxes(running=True) == []
    gone = cli("host", "destroy", "web", "-p", "cloud", "--yes", "--missing-ok")
    assert gone.exit_code == 0 and "nothing to do" in gone.stderr


def test_a_stopped_host_says_it_cannot_be_snapshotted_and_is_refused_early(
    cli, modal_settings, fake_modal
) -> None:
    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    assert cli("host", "stop", "web").exit_code == 0
    reason = "it is stopped; run 'mngr host start web' first"
    assert hosts(cli)["web"]["unsupported"] == {"snapshot": reason}
    calls = len(fake_modal.calls())
    refused = cli("host", "snapshot", "create", "web", "--name", "later")
    assert refused.exit_code == 2
    assert refused.stderr == f"error: host 'web.cloud' cannot snapshot: {reason}\n"
    # The host was listed to resolve it; the shim's snapshot verb never ran.
    assert {c["argv"][1] for c in fake_modal.calls()[calls:]} == {"list"}
    assert cli("host", "start", "web").exit_code == 0
    assert hosts(cli)["web"]["unsupported"] == {}


def test_a_stopped_host_is_listed_with_the_others(cli, modal_settings) -> None:
    assert cli("host", "create", "a", "b", "-p", "cloud").exit_code == 0
    assert cli("host", "create", "here", "-p", "local").exit_code == 0
    assert cli("host", "stop", "b.cloud").exit_code == 0
    listed = hosts(cli, "cloud", "local")
    assert {n: h["state"] for n, h in listed.items()} == {
        "a": "running",
        "b": "stopped",
        "here": "running",
    }
    table = cli("host", "list", "-p", "cloud")
    assert "stopped" in table.stdout and "running" in table.stdout


def test_destroying_a_stopped_host_forgets_it_and_purge_forgets_its_snapshots(
    cli, modal_settings, fake_modal
) -> None:
    cli("host", "create", "a", "b", "-p", "cloud")
    cli("host", "stop", "a", "b")
    assert cli("host", "destroy", "a", "--yes").exit_code == 0
    assert cli("host", "destroy", "b", "--yes", "--purge").exit_code == 0
    assert hosts(cli) == {}
    remaining = [r for r in fake_modal.records().values()]
    assert [r["host"] for r in remaining] == ["a"]  # a's stop snapshot outlives a


def test_create_from_a_snapshot(cli, modal_settings) -> None:
    cli("host", "create", "seed", "-p", "cloud")
    cli("host", "exec", "seed", "--", "sh", "-c", "echo planted > f")
    assert cli("host", "snapshot", "create", "seed", "--name", "planted").exit_code == 0
    made = cli("host", "create", "copy", "-p", "cloud", "--from-snapshot", "planted")
    assert made.exit_code == 0, made.stderr
    assert hosts(cli)["copy"]["image"] == "snapshot:planted"
    assert cli("host", "exec", "copy", "--", "cat", "f").stdout == "planted\n"


def test_a_name_taken_is_a_conflict_and_leaves_the_host(cli, modal_settings, fake_modal) -> None:
    assert cli("host", "create", "a", "-p", "cloud").exit_code == 0
    again = cli("host", "create", "a", "-p", "cloud")
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert len(fake_modal.sandboxes(running=True)) == 1
    cli("host", "stop", "a")
    while_stopped = cli("host", "create", "a", "-p", "cloud")
    assert while_stopped.exit_code == 1 and "already exists (stopped)" in while_stopped.stderr


def test_dry_run_prints_the_shim_command_and_runs_nothing(cli, modal_settings, fake_modal) -> None:
    dry = cli("host", "create", "web", "-p", "cloud", "--cpus", "1", "--dry-run")
    assert dry.exit_code == 0
    [line] = dry.stdout.splitlines()
    assert "-m mngr_backends.modal_shim create --app=mngr-cloud" in line
    assert "--name=web" in line and "--cpus=1" in line
    assert TOKEN_SECRET not in line
    assert fake_modal.calls() == []


def test_a_tag_value_too_long_for_modal_is_refused_before_anything_runs(
    cli, modal_settings, fake_modal
) -> None:
    refused = cli("host", "create", "web", "-p", "cloud", "--tag", "note=" + "x" * 255)
    assert refused.exit_code == 2
    assert "tag 'note': a Modal tag holds 63 characters, and this value takes 255" in refused.stderr
    assert fake_modal.calls() == []
    ok = cli("host", "create", "web", "-p", "cloud", "--tag", "note=" + "x" * 63)
    assert ok.exit_code == 0, ok.stderr
    retag = cli("host", "tag", "web", "note=a/b/" + "é" * 20)
    assert retag.exit_code == 2 and "this value takes 128" in retag.stderr


def test_no_token_exits_5_with_the_fix(cli, modal_settings, fake_modal) -> None:
    modal_settings(token_id_env=None, token_secret_env=None)  # and no ~/.modal.toml
    created = cli("host", "create", "web", "-p", "cloud")
    assert created.exit_code == 5
    assert "Token missing" in created.stderr and "modal token new" in created.stderr
    assert "Traceback" not in created.stderr
    listed = cli("host", "list", "-p", "cloud", "--format", "json")
    assert listed.exit_code == 6
    [error] = json.loads(listed.stdout)["errors"]
    assert error["kind"] == "unauthorised"
    checked = cli("provider", "check", "cloud")
    assert checked.exit_code == 5


def test_a_profile_of_the_modal_config_file_is_enough(cli, modal_settings, isolated_home) -> None:
    profiles = '[other]\ntoken_id = "x"\ntoken_secret = "y"\n'
    profiles += f'[work]\ntoken_id = "{TOKEN_ID}"\ntoken_secret = "{TOKEN_SECRET}"\n'
    (isolated_home / ".modal.toml").write_text(profiles)
    modal_settings(token_id_env=None, token_secret_env=None, profile="work")
    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    modal_settings(token_id_env=None, token_secret_env=None, profile="nobody")
    refused = cli("host", "create", "web2", "-p", "cloud")
    assert refused.exit_code == 5 and "Modal profile 'nobody' was not found" in refused.stderr


def test_the_token_never_shows_in_argv_or_output(cli, modal_settings, fake_modal) -> None:
    cli("host", "create", "web", "-p", "cloud")
    cli("host", "exec", "web", "--", "true")
    cli("host", "stop", "web")
    calls = fake_modal.calls()
    assert calls and all(TOKEN_SECRET not in " ".join(c["argv"]) for c in calls)
    shown = cli("config", "show", "--format", "json")
    assert TOKEN_SECRET not in shown.stdout + shown.stderr


def test_a_hanging_modal_becomes_an_error_row_and_others_still_list(
    cli, modal_settings, fake_modal
) -> None:
    modal_settings(timeout_s=2)
    assert cli("host", "create", "here", "-p", "local").exit_code == 0
    fake_modal.fault("*:hang")  # the first call to Modal never answers
    start = time.monotonic()
    listed = cli("host", "list", "-p", "cloud", "-p", "local", "--format", "json")
    assert time.monotonic() - start < 15
    assert listed.exit_code == 6
    doc = json.loads(listed.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["here"]
    [error] = doc["errors"]
    assert error["provider"] == "cloud" and error["kind"] == "timeout"


def test_unreachable_modal_is_an_error_row(cli, modal_settings, fake_modal) -> None:
    fake_modal.fault("*:unreachable")
    listed = cli("host", "list", "-p", "cloud", "--format", "json")
    assert listed.exit_code == 6
    [error] = json.loads(listed.stdout)["errors"]
    assert error["kind"] == "unreachable" and "Could not connect" in error["message"]


def test_a_missing_sdk_exits_4_with_the_fix(cli, modal_settings, tmp_path, monkeypatch) -> None:
    broken = tmp_path / "no-sdk"
    broken.mkdir()
    (broken / "modal.py").write_text("raise ImportError(\"No module named 'modal'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    created = cli("host", "create", "web", "-p", "cloud")
    assert created.exit_code == 4
    assert "install mngr[modal]" in created.stderr and "set python = " in created.stderr


def test_provider_check_and_show(cli, modal_settings) -> None:
    checked = cli("provider", "check", "cloud", "--format", "json")
    assert checked.exit_code == 0, checked.stderr
    [row] = json.loads(checked.stdout)["providers"]
    assert row["ok"] and row["details"]["app"] == "mngr-cloud"
    shown = cli("provider", "show", "cloud", "--format", "json")
    assert list(json.loads(shown.stdout)["provider"]["unsupported"]) == ["idle-stop", "gc"]


def test_a_flag_of_another_backend_is_refused(cli, modal_settings) -> None:
    refused = cli("host", "create", "web", "-p", "local", "--gpu", "T4")
    assert refused.exit_code == 2 and "--gpu is not supported by backend 'local'" in refused.stderr


def test_settings_errors_name_the_key(cli, modal_settings) -> None:
    modal_settings(token_id_env="ONLY_ONE", token_secret_env=None)
    shown = cli("host", "list", "-p", "cloud")
    assert shown.exit_code == 2 and "set both or neither" in shown.stderr
    modal_settings(gpu="T4")
    unknown = cli("host", "list", "-p", "cloud")
    assert unknown.exit_code == 2 and "unknown key 'gpu'" in unknown.stderr
