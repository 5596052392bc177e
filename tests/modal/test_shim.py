"""The shim run for real, as a subprocess: with the real SDK against the stand-in of Modal's
API (sdk_shim), and against the test double of the `modal` SDK (shim) where the stand-in
cannot go: a detached command (it would run on this machine), SDK chatter and an SDK that
fails to connect on cue, and no SDK at all."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mngr_backends.modal_shim import decode_tags, encode_tag_value
from modal_proto import api_pb2

from tests.modal.standin import TTL_NO_EXPIRY

HOST_A = "host-" + "a" * 32
HOST_B = "host-" + "b" * 32
WHEN = "2026-01-02T03:04:05Z"


def running(standin) -> list[Any]:
    return [box for box in standin.state.sandboxes.values() if not box.finished]


def records(standin) -> dict[str, dict[str, Any]]:
    """The records in the volume, by key (`host:<id>`, `snap:<id>`)."""
    return {
        path.removesuffix(".json").replace("/", ":", 1): json.loads(data)
        for files in standin.state.files.values()
        for path, data in files.items()
    }


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


def test_create_asks_the_sdk_for_the_resources_and_tags_the_sandbox(sdk_shim, standin) -> None:
    host = ok(
        create(
            sdk_shim,
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
    [box] = running(standin)
    assert box.name == "a" and box.spec["entrypoint"][0] == "sh"  # a keep-alive, named
    assert (box.spec["milli_cpu"], box.spec["memory_mb"], box.spec["gpu"]) == (2000, 4096, "A10G")
    assert box.spec["timeout_secs"] == 3600 and box.spec["regions"] == ["us-east", "us-west"]
    tags = decode_tags(box.tags)  # as Modal holds them: encoded
    assert tags["mngr-host-id"] == HOST_A
    assert tags["mngr-host-name"] == "a"
    assert tags["mngr-provider"] == "cloud"
    assert tags["mngr-created-at"] == WHEN
    assert tags["team"] == "ml" and tags["note"] == "a=b"
    assert host["state"] == "running" and host["sandbox_id"] == box.id
    assert host["tags"] == {"team": "ml", "note": "a=b"}  # mngr-* tags are not user tags
    assert host["resources"] == {"cpus": 2.0, "memory_gb": 4.0, "gpus": "A10G"}
    assert host["image"] == "python:3.12-slim"
    lookup = [r for name, r in standin.state.requests if name == "AppGetOrCreate"][-1]
    assert (lookup.app_name, lookup.environment_name) == ("mngr-cloud", "")
    assert lookup.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING


def test_a_sandbox_is_tagged_at_birth_never_after(sdk_shim, standin) -> None:
    ok(create(sdk_shim, "a", HOST_A, "--tag=team=ml"))
    [created] = [r for name, r in standin.state.requests if name == "SandboxCreateV2"]
    tags = decode_tags({tag.tag_name: tag.tag_value for tag in created.tags})
    assert tags["mngr-host-id"] == HOST_A  # in the create request itself
    assert tags["team"] == "ml"
    assert not {"SandboxTagsSet", "SandboxTagsSetV2"} & set(standin.state.calls)


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


def test_awkward_tag_values_round_trip_under_modals_tag_rule(sdk_shim, standin) -> None:
    long_image = "registry.example.com:5000/" + "deep/" * 20 + "image:1.2.3"
    tags = [f"--tag={k}={v}" for k, v in AWKWARD.items()]
    host = ok(create(sdk_shim, "a", HOST_A, f"--image={long_image}", "--region=eu,us", *tags))
    assert host["tags"] == AWKWARD and host["image"] == long_image
    [box] = running(standin)
    rule = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
    assert all(rule.fullmatch(k) and rule.fullmatch(v) for k, v in box.tags.items())
    [listed] = ok(sdk_shim("list"))["hosts"]
    assert listed["tags"] == AWKWARD and listed["image"] == long_image
    assert listed["created_at"] == WHEN
    stopped = ok(sdk_shim("stop", *stop_flags(box.id)))
    assert stopped["tags"] == AWKWARD
    [listed] = ok(sdk_shim("list"))["hosts"]
    assert listed["state"] == "stopped" and listed["tags"] == AWKWARD
    started = ok(sdk_shim("start", f"--host-id={HOST_A}"))
    assert started["tags"] == AWKWARD and started["image"] == long_image


def test_a_user_value_too_long_for_a_modal_tag_is_refused_by_the_shim(sdk_shim, standin) -> None:
    failed = create(sdk_shim, "a", HOST_A, "--tag=note=" + "é" * 11)
    assert failed.returncode == 1
    assert "takes 66 characters encoded for Modal" in json.loads(failed.stderr)["message"]
    assert standin.state.sandboxes == {}


def test_list_finds_running_sandboxes_by_tag_and_stopped_hosts_in_the_dict(sdk_shim) -> None:
    ok(create(sdk_shim, "a", HOST_A))
    b = ok(create(sdk_shim, "b", HOST_B))
    ok(
        sdk_shim(
            "stop",
            f"--sandbox-id={b['sandbox_id']}",
            f"--host-id={HOST_B}",
            "--snapshot-id=snap-" + "1" * 32,
            "--name=b-stop",
            f"--created-at={WHEN}",
        )
    )
    listed = ok(sdk_shim("list"))
    states = {h["name"]: h["state"] for h in listed["hosts"]}
    assert states == {"a": "running", "b": "stopped"}
    [stopped] = [h for h in listed["hosts"] if h["name"] == "b"]
    assert stopped["snapshots"] == ["snap-" + "1" * 32] and stopped["sandbox_id"] is None


def test_list_ignores_sandboxes_and_records_of_other_providers(sdk_shim) -> None:
    a = ok(create(sdk_shim, "a", HOST_A))
    ok(
        sdk_shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "1" * 32,
            "--name=s",
            f"--created-at={WHEN}",
        )
    )
    assert len(ok(sdk_shim("list"))["hosts"]) == 1
    # the same app and dict, another provider name: nothing of ours shows
    assert ok(sdk_shim("list", provider="someone-else")) == {"hosts": [], "snapshots": []}


def test_list_before_anything_exists_creates_nothing(sdk_shim, standin) -> None:
    assert ok(sdk_shim("list")) == {"hosts": [], "snapshots": []}
    assert standin.state.apps == {} and standin.state.volumes == {}


def test_a_name_in_use_is_a_conflict_running_or_stopped(sdk_shim) -> None:
    a = ok(create(sdk_shim, "a", HOST_A))
    again = create(sdk_shim, "a", HOST_B)
    assert again.returncode == 1 and error_of(again)["kind"] == "conflict"
    ok(
        sdk_shim(
            "stop",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "2" * 32,
            "--name=a-stop",
            f"--created-at={WHEN}",
        )
    )
    while_stopped = create(sdk_shim, "a", HOST_B)
    assert error_of(while_stopped) == {
        "kind": "conflict",
        "message": "host 'a' already exists (stopped)",
        "fix": "",
    }


def test_stop_snapshots_then_terminates_and_start_restores_the_files(sdk_shim, standin) -> None:
    a = ok(create(sdk_shim, "a", HOST_A, "--cpus=1.5", "--tag=k=v"))
    wrote = sdk_shim("exec", f"--sandbox-id={a['sandbox_id']}", "--", "sh", "-c", "echo kept > f")
    assert wrote.returncode == 0, wrote.stderr
    snap = "snap-" + "3" * 32
    stopped = ok(
        sdk_shim(
            "stop",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            f"--snapshot-id={snap}",
            "--name=a-stop",
            f"--created-at={WHEN}",
        )
    )
    assert stopped["state"] == "stopped"
    assert running(standin) == []
    ops = standin.state.calls
    assert ops.index("TaskSnapshotFilesystem") < ops.index("SandboxTerminateV2")
    record = records(standin)[f"host:{HOST_A}"]
    assert record["snapshot_id"] == snap and record["tags"] == {"k": "v"}
    assert record["spec"] == {"cpu": 1.5}

    started = ok(sdk_shim("start", f"--host-id={HOST_A}"))
    assert started["state"] == "running" and started["id"] == HOST_A
    assert started["tags"] == {"k": "v"} and started["resources"]["cpus"] == 1.5
    [box] = running(standin)
    assert box.spec["image_id"] == records(standin)[f"snap:{snap}"]["image_id"]
    assert box.name == "a" and box.spec["milli_cpu"] == 1500
    assert f"host:{HOST_A}" not in records(standin)  # running again: the record goes
    read = sdk_shim("exec", f"--sandbox-id={box.id}", "--", "cat", "f")
    assert read.stdout == "kept\n"


def test_start_uses_the_latest_snapshot(sdk_shim, standin) -> None:
    a = ok(create(sdk_shim, "a", HOST_A))
    sid = a["sandbox_id"]
    sdk_shim("exec", f"--sandbox-id={sid}", "--", "sh", "-c", "echo 1 > v")
    ok(
        sdk_shim(
            "stop",
            f"--sandbox-id={sid}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "4" * 32,
            "--name=first",
            "--created-at=2026-01-01T00:00:00Z",
        )
    )
    b = ok(sdk_shim("start", f"--host-id={HOST_A}"))
    sdk_shim("exec", f"--sandbox-id={b['sandbox_id']}", "--", "sh", "-c", "echo 2 > v")
    ok(
        sdk_shim(
            "stop",
            f"--sandbox-id={b['sandbox_id']}",
            f"--host-id={HOST_A}",
            "--snapshot-id=snap-" + "5" * 32,
            "--name=second",
            "--created-at=2026-01-02T00:00:00Z",
        )
    )
    c = ok(sdk_shim("start", f"--host-id={HOST_A}"))
    assert sdk_shim("exec", f"--sandbox-id={c['sandbox_id']}", "--", "cat", "v").stdout == "2\n"


def test_exec_passes_stdin_stdout_stderr_and_the_exit_code(sdk_shim) -> None:
    a = ok(create(sdk_shim))
    done = sdk_shim(
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


def test_snapshot_list_and_delete_forget_the_record(sdk_shim, standin) -> None:
    a = ok(create(sdk_shim))
    snap_id = "snap-" + "6" * 32
    snap = ok(
        sdk_shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            f"--snapshot-id={snap_id}",
            "--name=base",
            f"--created-at={WHEN}",
        )
    )
    assert snap["id"] == snap_id and snap["host"] == "a" and snap["image_id"].startswith("im-")
    assert [s["id"] for s in ok(sdk_shim("list-snapshots"))["snapshots"]] == [snap_id]
    assert ok(sdk_shim("list-snapshots", "--host-id=" + HOST_B))["snapshots"] == []
    assert snap["image_id"] in standin.state.images
    assert ok(sdk_shim("delete-snapshot", f"--snapshot-id={snap_id}")) == {"deleted": True}
    assert snap["image_id"] not in standin.state.images  # no image left to pay for
    assert ok(sdk_shim("delete-snapshot", f"--snapshot-id={snap_id}")) == {"deleted": False}
    assert ok(sdk_shim("list-snapshots"))["snapshots"] == []


def test_records_live_in_a_volume_and_snapshots_never_expire(sdk_shim, standin) -> None:
    a = ok(create(sdk_shim))
    ok(sdk_shim("stop", *stop_flags(a["sandbox_id"])))
    assert list(standin.state.image_ttls.values()) == [TTL_NO_EXPIRY]  # not Modal's 30 days
    assert "DictUpdate" not in standin.state.calls  # a Dict entry expires after 7 days unread
    assert set(records(standin)) == {f"host:{HOST_A}", "snap:snap-" + "9" * 32}
    [volume] = standin.state.files.values()
    assert set(volume) == {f"host/{HOST_A}.json", "snap/snap-" + "9" * 32 + ".json"}


def test_deleting_the_snapshot_a_stopped_host_starts_from_keeps_its_image(
    sdk_shim, standin
) -> None:
    a = ok(create(sdk_shim))
    ok(sdk_shim("stop", *stop_flags(a["sandbox_id"])))
    image_id = records(standin)[f"host:{HOST_A}"]["image_id"]
    assert ok(sdk_shim("delete-snapshot", "--snapshot-id=snap-" + "9" * 32)) == {"deleted": True}
    assert image_id in standin.state.images
    started = ok(sdk_shim("start", f"--host-id={HOST_A}"))
    assert started["state"] == "running"


def test_create_from_a_snapshot_starts_from_its_image(sdk_shim, standin) -> None:
    a = ok(create(sdk_shim))
    sdk_shim("exec", f"--sandbox-id={a['sandbox_id']}", "--", "sh", "-c", "echo seed > s")
    snap_id = "snap-" + "7" * 32
    ok(
        sdk_shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            f"--snapshot-id={snap_id}",
            "--name=seed",
            f"--created-at={WHEN}",
        )
    )
    b = ok(create(sdk_shim, "b", HOST_B, f"--from-snapshot={snap_id}"))
    assert b["image"] == "snapshot:seed"
    assert sdk_shim("exec", f"--sandbox-id={b['sandbox_id']}", "--", "cat", "s").stdout == "seed\n"
    missing = create(sdk_shim, "c", "host-" + "c" * 32, "--from-snapshot=snap-" + "0" * 32)
    assert missing.returncode == 3 and error_of(missing)["kind"] == "not-found"


def test_terminate_is_idempotent_and_keeps_snapshots(sdk_shim, standin) -> None:
    """destroy --purge deletes snapshots as jobs of their own (the Service's), so terminate
    forgets the host and nothing else."""
    a = ok(create(sdk_shim))
    snap_id = "snap-" + "8" * 32
    ok(
        sdk_shim(
            "snapshot",
            f"--sandbox-id={a['sandbox_id']}",
            f"--host-id={HOST_A}",
            f"--snapshot-id={snap_id}",
            "--name=s",
            f"--created-at={WHEN}",
        )
    )
    gone = ok(sdk_shim("terminate", f"--host-id={HOST_A}"))
    assert gone["terminated"] == [a["sandbox_id"]] and "deleted_snapshots" not in gone
    assert ok(sdk_shim("terminate", f"--host-id={HOST_A}"))["terminated"] == []
    assert list(records(standin)) == [f"snap:{snap_id}"]


def test_no_token_is_unauthorised_with_the_sdk_message_and_exit_5(sdk_shim) -> None:
    done = sdk_shim("list", token=False)
    assert done.returncode == 5 and done.stdout == ""
    error = error_of(done)
    assert error["kind"] == "unauthorised"
    assert error["message"].startswith("Token missing. Could not authenticate client.")
    assert "modal token new" in error["fix"]


def test_a_wrong_token_is_unauthorised(sdk_shim) -> None:
    done = sdk_shim("list", env={"MODAL_TOKEN_SECRET": "not-the-secret"})
    assert done.returncode == 5 and error_of(done)["kind"] == "unauthorised"


def test_an_unknown_sandbox_is_not_found_exit_3(sdk_shim) -> None:
    done = sdk_shim(
        "snapshot",
        "--sandbox-id=sb-gone",
        f"--host-id={HOST_A}",
        "--snapshot-id=snap-" + "9" * 32,
        "--name=x",
        f"--created-at={WHEN}",
    )
    assert done.returncode == 3 and error_of(done)["kind"] == "not-found"


def test_a_sandbox_of_another_host_is_not_found(sdk_shim) -> None:
    a = ok(create(sdk_shim))
    done = sdk_shim(
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


def test_exec_errors_are_one_readable_line_for_the_terminal(sdk_shim) -> None:
    done = sdk_shim("exec", "--sandbox-id=sb-gone", "--", "true")
    assert done.returncode == 3
    assert done.stderr.startswith("error: Sandbox sb-gone not found")


def test_bad_arguments_are_a_json_error(sdk_shim) -> None:
    done = sdk_shim("create", "--name=a")
    assert done.returncode == 1 and "required" in error_of(done)["message"]


@pytest.mark.parametrize("verb", ["check"])
def test_check_names_the_app(sdk_shim, verb: str) -> None:
    assert ok(sdk_shim(verb))["app"] == "mngr-cloud"


@given(st.text(max_size=80))
def test_any_text_encodes_to_modals_tag_characters_and_back(value: str) -> None:
    encoded = encode_tag_value(value)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", encoded)
    assert decode_tags({"k": encoded}) == {"k": value}
