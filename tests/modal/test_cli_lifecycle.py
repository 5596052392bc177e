"""Modal through the CLI: mngr -> real runner -> real shim subprocess -> the installed `modal`
SDK -> the local stand-in of Modal's API (the whole lifecycle is in test_standin_lifecycle.py).
From the token test on, the SDK double (fake_sdk/) stays: it logs the argv of every shim call
and makes a call hang outright; the rest do not reach Modal at all."""

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


def test_a_stopped_host_says_it_cannot_be_snapshotted_and_is_refused_early(
    cli, standin_settings, standin
) -> None:
    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    assert cli("host", "stop", "web").exit_code == 0
    reason = "it is stopped; run 'mngr host start web' first"
    assert hosts(cli)["web"]["unsupported"] == {"snapshot": reason}
    calls = len(standin.state.calls)
    refused = cli("host", "snapshot", "create", "web", "--name", "later")
    assert refused.exit_code == 2
    assert refused.stderr == f"error: host 'web.cloud' cannot snapshot: {reason}\n"
    # The host was listed to resolve it; nothing was snapshotted.
    assert "TaskSnapshotFilesystem" not in standin.state.calls[calls:]
    assert cli("host", "start", "web").exit_code == 0
    assert hosts(cli)["web"]["unsupported"] == {}


def test_a_stopped_host_is_listed_with_the_others(cli, standin_settings) -> None:
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
    cli, standin_settings, standin
) -> None:
    cli("host", "create", "a", "b", "-p", "cloud")
    cli("host", "stop", "a", "b")
    assert cli("host", "destroy", "a", "--yes").exit_code == 0
    assert cli("host", "destroy", "b", "--yes", "--purge").exit_code == 0
    assert hosts(cli) == {}
    remaining = [json.loads(r) for files in standin.state.files.values() for r in files.values()]
    assert [r["host"] for r in remaining] == ["a"]  # a's stop snapshot outlives a


def test_create_from_a_snapshot(cli, standin_settings) -> None:
    cli("host", "create", "seed", "-p", "cloud")
    cli("host", "exec", "seed", "--", "sh", "-c", "echo planted > f")
    assert cli("host", "snapshot", "create", "seed", "--name", "planted").exit_code == 0
    made = cli("host", "create", "copy", "-p", "cloud", "--from-snapshot", "planted")
    assert made.exit_code == 0, made.stderr
    assert hosts(cli)["copy"]["image"] == "snapshot:planted"
    assert cli("host", "exec", "copy", "--", "cat", "f").stdout == "planted\n"


def test_a_name_taken_is_a_conflict_and_leaves_the_host(cli, standin_settings, standin) -> None:
    assert cli("host", "create", "a", "-p", "cloud").exit_code == 0
    again = cli("host", "create", "a", "-p", "cloud")
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert len([b for b in standin.state.sandboxes.values() if not b.finished]) == 1
    cli("host", "stop", "a")
    while_stopped = cli("host", "create", "a", "-p", "cloud")
    assert while_stopped.exit_code == 1 and "already exists (stopped)" in while_stopped.stderr


def test_dry_run_prints_the_shim_command_and_runs_nothing(cli, standin_settings, standin) -> None:
    dry = cli("host", "create", "web", "-p", "cloud", "--cpus", "1", "--dry-run")
    assert dry.exit_code == 0
    [line] = dry.stdout.splitlines()
    assert "-m mngr_backends.modal_shim create --app=mngr-cloud" in line
    assert "--name=web" in line and "--cpus=1" in line
    assert TOKEN_SECRET not in line
    assert standin.state.calls == []


def test_a_tag_value_too_long_for_modal_is_refused_before_anything_runs(
    cli, standin_settings, standin
) -> None:
    refused = cli("host", "create", "web", "-p", "cloud", "--tag", "note=" + "x" * 255)
    assert refused.exit_code == 2
    assert "tag 'note': a Modal tag holds 63 characters, and this value takes 255" in refused.stderr
    assert standin.state.calls == []
    ok = cli("host", "create", "web", "-p", "cloud", "--tag", "note=" + "x" * 63)
    assert ok.exit_code == 0, ok.stderr
    retag = cli("host", "tag", "web", "note=a/b/" + "é" * 20)
    assert retag.exit_code == 2 and "this value takes 128" in retag.stderr


def test_no_token_exits_5_with_the_fix(cli, standin_settings, standin) -> None:
    standin_settings(token_id_env=None, token_secret_env=None)  # and no ~/.modal.toml
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


def test_a_profile_of_the_modal_config_file_is_enough(cli, standin_settings, isolated_home) -> None:
    profiles = '[other]\ntoken_id = "x"\ntoken_secret = "y"\n'
    profiles += f'[work]\ntoken_id = "{TOKEN_ID}"\ntoken_secret = "{TOKEN_SECRET}"\n'
    (isolated_home / ".modal.toml").write_text(profiles)
    standin_settings(token_id_env=None, token_secret_env=None, profile="work")
    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    standin_settings(token_id_env=None, token_secret_env=None, profile="nobody")
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


def test_a_missing_sdk_exits_4_with_the_fix(cli, modal_settings, tmp_path, monkeypatch) -> None:
    broken = tmp_path / "no-sdk"
    broken.mkdir()
    (broken / "modal.py").write_text("raise ImportError(\"No module named 'modal'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    created = cli("host", "create", "web", "-p", "cloud")
    assert created.exit_code == 4
    assert "install mngr[modal]" in created.stderr and "set python = " in created.stderr


def test_provider_check_and_show(cli, standin_settings) -> None:
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
