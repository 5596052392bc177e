"""The shim run for real, as a subprocess, against the test double of the `modal` SDK."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mngr_backends.modal_shim import decode_tags, encode_tag_value

HOST_A = "host-" + "a" * 32
HOST_B = "host-" + "b" * 32
WHEN = "2026-01-02T03:04:05Z"


def ok(done: Any) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def error_of(done: Any) -> dict[str, Any]:
    """The shim's failure: one JSON object, the last line of stderr."""
    assert done.returncode != 0
    return json.loads(done.stderr.strip().splitlines()[-1])


def create(shim, name: str = "a", host_id: str = HOST_A, *extra: str) -> Any:
    return shim("create", f"--name={name}", f"--host-id={host_id}", f"--created-at={WHEN}", *extra)


def stop_flags(sandbox_id: str, host_id: str = HOST_A, snap: str = "snap-" + "9" * 32) -> list:
    return [
        f"--sandbox-id={sandbox_id}",
        f"--host-id={host_id}",
        f"--snapshot-id={snap}",
        "--name=stop",
        f"--created-at={WHEN}",
    ]


def test_create_asks_the_sdk_for_the_resources_and_tags_the_sandbox(shim, fake_modal) -> None:
    host = ok(
        create(
            shim,
            "a",
            HOST_A,
            "--cpus=2",
            "--memory-mib=4096",
            "--gpu=A10G",
            "--timeout=3600",
            "--region=us-east,us-west",
            "--image=python:3.12-slim",
            "--tag=team=ml",
            "--tag=note=a=b",
        )
    )
    [box] = fake_modal.sandboxes()
    assert box["name"] == "a" and box["args"][0] == "sh"  # a keep-alive, named for uniqueness
    assert box["spec"] == {
        "cpu": 2.0,
        "memory": 4096,
        "gpu": "A10G",
        "timeout": 3600,
        "region": ["us-east", "us-west"],
    }
    tags = decode_tags(box["tags"])  # as Modal holds them: encoded
    assert tags["mngr-host-id"] == HOST_A
    assert tags["mngr-host-name"] == "a"
    assert tags["mngr-provider"] == "cloud"
    assert tags["mngr-created-at"] == WHEN
    assert tags["team"] == "ml" and tags["note"] == "a=b"
    assert host["state"] == "running" and host["sandbox_id"] == box["id"]
    assert host["tags"] == {"team": "ml", "note": "a=b"}  # mngr-* tags are not user tags
    assert host["resources"] == {"cpus": 2.0, "memory_gb": 4.0, "gpus": "A10G"}
    assert host["image"] == "python:3.12-slim"
    lookup = [c for c in fake_modal.calls() if c["op"] == "App.lookup"][-1]
    assert lookup["args"] == {"name": "mngr-cloud", "environment_name": None, "create": True}


def test_a_sandbox_is_tagged_at_birth_never_after(shim, fake_modal) -> None:
    ok(create(shim, "a", HOST_A, "--tag=team=ml"))
    calls = fake_modal.calls()
    [created] = [c for c in calls if c["op"] == "Sandbox.create"]
    assert created["args"]["tags"]["mngr-host-id"] == HOST_A  # in the create request itself
    assert created["args"]["tags"]["team"] == "ml"
    assert "Sandbox.set_tags" not in {c["op"] for c in calls}


AWKWARD = {
    "colon": "H100:2",
    "comma": "us-east,us-west",
    "slash": "ghcr.io/org/img",
    "unicode": "café ☕ 日本",
    "empty": "",
    "dot": ".",
    "escape-like": ".2e.zz",
    "equals": "a=b",
    "fits": "x" * 63,
}


def test_awkward_tag_values_round_trip_under_modals_tag_rule(shim, fake_modal) -> None:
    long_image = "registry.example.com:5000/" + "deep/" * 20 + "image:1.2.3"
    tags = [f"--tag={k}={v}" for k, v in AWKWARD.items()]
    host = ok(create(shim, "a", HOST_A, f"--image={long_image}", "--region=eu,us", *tags))
    assert host["tags"] == AWKWARD and host["image"] == long_image
    [box] = fake_modal.sandboxes()
    rule = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
    assert all(rule.fullmatch(k) and rule.fullmatch(v) for k, v in box["tags"].items())
    [listed] = ok(shim("list"))["hosts"]
    assert listed["tags"] == AWKWARD and listed["image"] == long_image
    assert listed["created_at"] == WHEN
    stopped = ok(shim("stop", *stop_flags(box["id"])))
    assert stopped["tags"] == AWKWARD
    [listed] = ok(shim("list"))["hosts"]
    assert listed["state"] == "stopped" and listed["tags"] == AWKWARD
    started = ok(shim("start", f"--host-id={HOST_A}"))
    assert started["tags"] == AWKWARD and started["image"] == long_image


def test_a_user_value_too_long_for_a_modal_tag_is_refused_by_the_shim(shim, fake_modal) -> None:
    failed = create(shim, "a", HOST_A, "--tag=note=" + "é" * 11)
    assert failed.returncode == 1
    assert "takes 66 characters encoded for Modal" in json.loads(failed.stderr)["message"]
    assert fake_modal.sandboxes() == []


def test_list_finds_running_sandboxes_by_tag_and_stopped_hosts_in_the_dict(shim) -> None:
    ok(create(shim, "a", HOST_A))
    b = ok(create(shim, "b", HOST_B))
    ok(
        shim(
            "stop",
            f"--sandbox-id={b['sandbox_id']}",
            f"--host-id={HOST_B}",
            "--snapshot-id=snap-" + "1" * 32,
            "--name=b-stop",
            f"--created-at={WHEN}",
        )
    )
    listed = ok(shim("list"))
    states = {h["name"]: h["state"] for h in listed["hosts"]}
    assert states == {"a": "running", "b": "stopped"}
    [stopped] = [h for h in listed["hosts"] if h["name"] == "b"]
    assert stopped["snapshots"] == ["snap-" + "1" * 32] and stopped["sandbox_id"] is None


def test_list_ignores_sandboxes_and_records_of_other_providers(shim) -> None:
    a = ok(create(shim, "a", HOST_A))
    ok(
        shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "1" * 32,
            "--name=s",
            f"--created-at={WHEN}",
        )
    )
    assert len(ok(shim("list"))["hosts"]) == 1
    # the same app and dict, another provider name: nothing of ours shows
    assert ok(shim("list", provider="someone-else")) == {"hosts": [], "snapshots": []}


def test_list_before_anything_exists_creates_nothing(shim, fake_modal) -> None:
    assert ok(shim("list")) == {"hosts": [], "snapshots": []}
    state = fake_modal.state()
    assert not state.get("apps") and not state.get("volumes")


def test_a_name_in_use_is_a_conflict_running_or_stopped(shim) -> None:
    a = ok(create(shim, "a", HOST_A))
    again = create(shim, "a", HOST_B)
    assert again.returncode == 1 and error_of(again)["kind"] == "conflict"
    ok(
        shim(
            "stop",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "2" * 32,
            "--name=a-stop",
            f"--created-at={WHEN}",
        )
    )
    while_stopped = create(shim, "a", HOST_B)
    assert error_of(while_stopped) == {
        "kind": "conflict",
        "message": "host 'a' already exists (stopped)",
        "fix": "",
    }


def test_stop_snapshots_then_terminates_and_start_restores_the_files(shim, fake_modal) -> None:
    a = ok(create(shim, "a", HOST_A, "--cpus=1.5", "--tag=k=v"))
    wrote = shim("exec", f"--sandbox-id={a['sandbox_id']}", "--", "sh", "-c", "echo kept > f")
    assert wrote.returncode == 0, wrote.stderr
    snap = "snap-" + "3" * 32
    stopped = ok(
        shim(
            "stop",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            f"--snapshot-id={snap}",
            "--name=a-stop",
            f"--created-at={WHEN}",
        )
    )
    assert stopped["state"] == "stopped"
    assert fake_modal.sandboxes(running=True) == []
    ops = [c["op"] for c in fake_modal.calls()]
    assert ops.index("Sandbox.snapshot_filesystem") < ops.index("Sandbox.terminate")
    record = fake_modal.records()[f"host:{HOST_A}"]
    assert record["snapshot_id"] == snap and record["tags"] == {"k": "v"}
    assert record["spec"] == {"cpu": 1.5}

    started = ok(shim("start", f"--host-id={HOST_A}"))
    assert started["state"] == "running" and started["id"] == HOST_A
    assert started["tags"] == {"k": "v"} and started["resources"]["cpus"] == 1.5
    [box] = fake_modal.sandboxes(running=True)
    assert box["image_id"] == fake_modal.records()[f"snap:{snap}"]["image_id"]
    assert box["name"] == "a" and box["spec"]["cpu"] == 1.5
    assert f"host:{HOST_A}" not in fake_modal.records()  # running again: the record goes
    read = shim("exec", f"--sandbox-id={box['id']}", "--", "cat", "f")
    assert read.stdout == "kept\n"


def test_start_uses_the_latest_snapshot(shim, fake_modal) -> None:
    a = ok(create(shim, "a", HOST_A))
    sid = a["sandbox_id"]
    shim("exec", f"--sandbox-id={sid}", "--", "sh", "-c", "echo 1 > v")
    ok(
        shim(
            "stop",
            f"--sandbox-id={sid}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "4" * 32,
            "--name=first",
            "--created-at=2026-01-01T00:00:00Z",
        )
    )
    b = ok(shim("start", f"--host-id={HOST_A}"))
    shim("exec", f"--sandbox-id={b['sandbox_id']}", "--", "sh", "-c", "echo 2 > v")
    ok(
        shim(
            "stop",
            f"--sandbox-id={b['sandbox_id']}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "5" * 32,
            "--name=second",
            "--created-at=2026-01-02T00:00:00Z",
        )
    )
    c = ok(shim("start", f"--host-id={HOST_A}"))
    assert shim("exec", f"--sandbox-id={c['sandbox_id']}", "--", "cat", "v").stdout == "2\n"


def test_exec_passes_stdin_stdout_stderr_and_the_exit_code(shim) -> None:
    a = ok(create(shim))
    done = shim(
        "exec",
        f"--sandbox-id={a['sandbox_id']}",
        "--",
        "sh",
        "-c",
        "cat; echo to-err >&2; exit 7",
        input="from stdin\n",
    )
    assert done.returncode == 7
    assert done.stdout == "from stdin\n" and done.stderr == "to-err\n"


def test_exec_detach_returns_at_once_and_leaves_the_command_running(shim, fake_modal) -> None:
    a = ok(create(shim))
    done = shim(
        "exec", f"--sandbox-id={a['sandbox_id']}", "--detach", "--", "sh", "-c", "echo $$ > pid"
    )
    assert done.returncode == 0
    [exec_call] = [c for c in fake_modal.calls() if c["op"] == "Sandbox.exec"]
    assert exec_call["args"]["args"][:2] == ["sh", "-c"] and "nohup" in exec_call["args"]["args"][2]


def test_snapshot_list_and_delete_forget_the_record(shim, fake_modal) -> None:
    a = ok(create(shim))
    snap_id = "snap-" + "6" * 32
    snap = ok(
        shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            f"--snapshot-id={snap_id}",
            "--name=base",
            f"--created-at={WHEN}",
        )
    )
    assert snap["id"] == snap_id and snap["host"] == "a" and snap["image_id"].startswith("im-")
    assert [s["id"] for s in ok(shim("list-snapshots"))["snapshots"]] == [snap_id]
    assert ok(shim("list-snapshots", "--host-id=" + HOST_B))["snapshots"] == []
    assert snap["image_id"] in fake_modal.state()["images"]
    assert ok(shim("delete-snapshot", f"--snapshot-id={snap_id}")) == {"deleted": True}
    assert snap["image_id"] not in fake_modal.state()["images"]  # no image left to pay for
    assert ok(shim("delete-snapshot", f"--snapshot-id={snap_id}")) == {"deleted": False}
    assert ok(shim("list-snapshots"))["snapshots"] == []


def test_records_live_in_a_volume_and_snapshots_never_expire(shim, fake_modal) -> None:
    a = ok(create(shim))
    ok(shim("stop", *stop_flags(a["sandbox_id"])))
    [snapshotted] = [c for c in fake_modal.calls() if c["op"] == "Sandbox.snapshot_filesystem"]
    assert snapshotted["args"]["ttl"] is None  # Modal's default would be 30 days
    assert not [c for c in fake_modal.calls() if c["op"].startswith("Dict.")]  # 7-day expiry
    assert set(fake_modal.records()) == {f"host:{HOST_A}", "snap:snap-" + "9" * 32}
    [volume] = fake_modal.state()["volumes"].values()
    assert set(volume) == {f"host/{HOST_A}.json", "snap/snap-" + "9" * 32 + ".json"}


def test_deleting_the_snapshot_a_stopped_host_starts_from_keeps_its_image(shim, fake_modal) -> None:
    a = ok(create(shim))
    ok(shim("stop", *stop_flags(a["sandbox_id"])))
    image_id = fake_modal.records()[f"host:{HOST_A}"]["image_id"]
    assert ok(shim("delete-snapshot", "--snapshot-id=snap-" + "9" * 32)) == {"deleted": True}
    assert image_id in fake_modal.state()["images"]
    started = ok(shim("start", f"--host-id={HOST_A}"))
    assert started["state"] == "running"


def test_create_from_a_snapshot_starts_from_its_image(shim, fake_modal) -> None:
    a = ok(create(shim))
    shim("exec", f"--sandbox-id={a['sandbox_id']}", "--", "sh", "-c", "echo seed > s")
    snap_id = "snap-" + "7" * 32
    ok(
        shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            f"--snapshot-id={snap_id}",
            "--name=seed",
            f"--created-at={WHEN}",
        )
    )
    b = ok(create(shim, "b", HOST_B, f"--from-snapshot={snap_id}"))
    assert b["image"] == "snapshot:seed"
    assert shim("exec", f"--sandbox-id={b['sandbox_id']}", "--", "cat", "s").stdout == "seed\n"
    missing = create(shim, "c", "host-" + "c" * 32, "--from-snapshot=snap-" + "0" * 32)
    assert missing.returncode == 3 and error_of(missing)["kind"] == "not-found"


def test_terminate_is_idempotent_and_purge_forgets_snapshots(shim, fake_modal) -> None:
    a = ok(create(shim))
    ok(
        shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "8" * 32,
            "--name=s",
            f"--created-at={WHEN}",
        )
    )
    gone = ok(shim("terminate", f"--host-id={HOST_A}", "--purge"))
    assert gone["terminated"] == [a["sandbox_id"]] and gone["deleted_snapshots"] == [
        "snap-" + "8" * 32
    ]
    assert ok(shim("terminate", f"--host-id={HOST_A}"))["terminated"] == []
    assert fake_modal.records() == {}


def test_no_token_is_unauthorised_with_the_sdk_message_and_exit_5(shim) -> None:
    done = shim("list", token=False)
    assert done.returncode == 5 and done.stdout == ""
    error = error_of(done)
    assert error["kind"] == "unauthorised"
    assert error["message"].startswith("Token missing. Could not authenticate client.")
    assert "modal token new" in error["fix"]


def test_a_wrong_token_is_unauthorised(shim) -> None:
    done = shim("list", env={"MODAL_TOKEN_SECRET": "not-the-secret"})
    assert done.returncode == 5 and error_of(done)["kind"] == "unauthorised"


def test_an_unknown_sandbox_is_not_found_exit_3(shim) -> None:
    done = shim(
        "snapshot",
        "--sandbox-id=sb-gone",
        f"--host-id={HOST_A}",
        "--snapshot-id=snap-" + "9" * 32,
        "--name=x",
        f"--created-at={WHEN}",
    )
    assert done.returncode == 3 and error_of(done)["kind"] == "not-found"


def test_a_sandbox_of_another_host_is_not_found(shim) -> None:
    a = ok(create(shim))
    done = shim(
        "stop",
        f"--sandbox-id={a['sandbox_id']}",
        f"--host-id={HOST_B}",
        "--snapshot-id=snap-" + "9" * 32,
        "--name=x",
        f"--created-at={WHEN}",
    )
    assert done.returncode == 3 and "is not host" in error_of(done)["message"]


def test_unreachable_modal_is_its_own_kind(shim, fake_modal) -> None:
    fake_modal.fault("*:unreachable")
    done = shim("list")
    assert done.returncode == 1
    assert error_of(done) == {
        "kind": "unreachable",
        "message": "Could not connect to the Modal server.",
        "fix": "",
    }


def test_sdk_chatter_never_reaches_stdout(shim, fake_modal) -> None:
    ok(create(shim))
    fake_modal.fault("*:chatty")
    done = shim("list")
    assert [h["name"] for h in ok(done)["hosts"]] == ["a"]
    assert "Building image" in done.stderr


def test_missing_sdk_is_vendor_missing_exit_4(shim, tmp_path: Path) -> None:
    broken = tmp_path / "no-sdk"
    broken.mkdir()
    (broken / "modal.py").write_text("raise ImportError(\"No module named 'modal'\")\n")
    done = shim("list", env={"PYTHONPATH": str(broken)})
    assert done.returncode == 4
    error = error_of(done)
    assert error["kind"] == "vendor-missing" and "mngr[modal]" in error["fix"]


def test_exec_without_the_sdk_says_so_on_the_terminal_and_exits_4(shim, tmp_path: Path) -> None:
    broken = tmp_path / "no-sdk"
    broken.mkdir()
    (broken / "modal.py").write_text("raise ImportError(\"No module named 'modal'\")\n")
    done = shim("exec", "--sandbox-id=sb-1", "--", "true", env={"PYTHONPATH": str(broken)})
    assert done.returncode == 4
    assert done.stderr.startswith("error: the Modal SDK (package 'modal') cannot be imported")
    assert "install mngr[modal]" in done.stderr


def test_exec_errors_are_one_readable_line_for_the_terminal(shim) -> None:
    done = shim("exec", "--sandbox-id=sb-gone", "--", "true")
    assert done.returncode == 3
    assert done.stderr.startswith("error: Sandbox sb-gone not found")


def test_bad_arguments_are_a_json_error(shim) -> None:
    done = shim("create", "--name=a")
    assert done.returncode == 1 and "required" in error_of(done)["message"]


@pytest.mark.parametrize("verb", ["check"])
def test_check_names_the_app(shim, verb: str) -> None:
    assert ok(shim(verb))["app"] == "mngr-cloud"


@given(st.text(max_size=80))
def test_any_text_encodes_to_modals_tag_characters_and_back(value: str) -> None:
    encoded = encode_tag_value(value)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", encoded)
    assert decode_tags({"k": encoded}) == {"k": value}
