"""The whole Modal lifecycle with the real SDK (no double): mngr -> real runner -> real shim
subprocess -> the installed `modal` SDK -> gRPC -> the local stand-in of Modal's API
(standin.py). Nothing leaves 127.0.0.0/8 (the `standin` fixture fails the test otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.modal.conftest import COMMON, SHIM
from tests.modal.standin import TTL_NO_EXPIRY


def hosts(cli) -> dict[str, dict[str, Any]]:
    listed = cli("host", "list", "-p", "cloud", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    return {h["name"]: h for h in json.loads(listed.stdout)["hosts"]}


def shim_error(verb: str, *args: str) -> dict[str, Any]:
    """The shim's own report of a failure (its kind), run as mngr runs it."""
    env = dict(os.environ, MODAL_TOKEN_ID=os.environ["MY_MODAL_ID"])
    env["MODAL_TOKEN_SECRET"] = os.environ["MY_MODAL_SECRET"]
    done = subprocess.run(
        [*SHIM, verb, *COMMON, "--provider=cloud", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    return json.loads(done.stderr.strip().splitlines()[-1])


def running(standin) -> list[Any]:
    return [b for b in standin.state.sandboxes.values() if not b.finished]


def test_the_whole_lifecycle_with_the_real_sdk(cli, standin_settings, standin) -> None:
    created = cli(
        "host", "create", "web", "-p", "cloud", "--cpus", "2", "--memory", "4g",
        "--timeout", "3600", "--region", "us-east", "--tag", "team=ml", "--tag", "note=a/b:c",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    [box] = running(standin)
    assert box.spec["milli_cpu"] == 2000 and box.spec["memory_mb"] == 4096
    assert box.spec["timeout_secs"] == 3600 and box.spec["regions"] == ["us-east"]
    assert box.tags["mngr-provider"] == "cloud" and box.tags["team"] == "ml"  # tagged at birth
    web = hosts(cli)["web"]
    assert web["state"] == "running" and web["tags"] == {"team": "ml", "note": "a/b:c"}
    assert web["resources"]["cpus"] == 2.0 and web["resources"]["memory_gb"] == 4.0
    assert web["address"]["sandbox_id"] == box.id

    ran = cli("host", "exec", "web", "--", "sh", "-c", "echo hello > greeting; echo out; exit 9")
    assert ran.exit_code == 9 and ran.stdout == "out\n"
    assert (box.root / "greeting").read_text() == "hello\n"  # it ran in the sandbox

    stopped = cli("host", "stop", "web")
    assert stopped.exit_code == 0, stopped.stderr
    assert running(standin) == []  # snapshot, then terminate
    [image] = [i for i, files in standin.state.images.items() if files]
    assert standin.state.image_ttls[image] == TTL_NO_EXPIRY  # a stopped host's image stays
    web = hosts(cli)["web"]
    assert web["state"] == "stopped" and web["tags"] == {"team": "ml", "note": "a/b:c"}
    assert len(web["snapshots"]) == 1

    started = cli("host", "start", "web")
    assert started.exit_code == 0, started.stderr
    [again] = running(standin)
    assert again.id != box.id and again.spec["image_id"] == image
    assert again.tags == box.tags  # the same host, asked for the same resources
    read = cli("host", "exec", "web", "--", "cat", "greeting")
    assert read.exit_code == 0 and read.stdout == "hello\n"
    assert cli("host", "tag", "web", "owner=ana@example.org", "--remove", "note").exit_code == 0
    assert hosts(cli)["web"]["tags"] == {"team": "ml", "owner": "ana@example.org"}

    snap = cli("host", "snapshot", "create", "web", "--name", "base")
    assert snap.exit_code == 0, snap.stderr
    listed = cli("host", "snapshot", "list", "web", "-p", "cloud", "--format", "json")
    names = sorted(s["name"] for s in json.loads(listed.stdout)["snapshots"])
    assert names[0] == "base" and names[1].startswith("web-stop-")
    base_image = max(i for i, files in standin.state.images.items() if files)
    assert cli("host", "snapshot", "delete", "base", "-p", "cloud", "--yes").exit_code == 0
    assert base_image in standin.state.deleted_images  # the image goes with its record
    listed = cli("host", "snapshot", "list", "web", "-p", "cloud", "--format", "json")
    assert [s["name"] for s in json.loads(listed.stdout)["snapshots"]] == names[1:]
    cli("host", "exec", "web", "--", "sh", "-c", "echo later > greeting")
    back = cli("host", "start", "web", "--snapshot", names[1])  # the stop snapshot: hello
    assert back.exit_code == 0, back.stderr
    read = cli("host", "exec", "web", "--", "cat", "greeting")
    assert read.exit_code == 0 and read.stdout == "hello\n"
    assert hosts(cli)["web"]["tags"] == {"team": "ml", "owner": "ana@example.org"}

    destroyed = cli("host", "destroy", "web", "--yes", "--purge")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert hosts(cli) == {} and running(standin) == []
    assert [f for files in standin.state.files.values() for f in files] == []  # no records left


def test_exec_passes_stdin_stdout_stderr_and_the_exit_code(standin_settings, standin) -> None:
    from mngr.cli import run

    assert run(["host", "create", "box", "-p", "cloud"]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "mngr", "host", "exec", "box", "--", "sh", "-c",
         "tr a-z A-Z; echo to-err >&2; exit 3"],
        input=b"from stdin\n" * 5000,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout == b"FROM STDIN\n" * 5000
    assert done.stderr.decode().endswith("to-err\n")


def test_a_gpu_sandbox_takes_the_sdks_other_backend(cli, standin_settings, standin) -> None:
    """A GPU sandbox is a V1 sandbox in SDK 1.6 (other calls, another id shape)."""
    assert cli("host", "create", "g", "-p", "cloud", "--gpu", "T4").exit_code == 0
    [box] = running(standin)
    assert box.spec["gpu"] == "T4" and "SandboxCreate" in standin.state.calls
    ran = cli("host", "exec", "g", "--", "sh", "-c", "echo gpu; exit 4")
    assert ran.exit_code == 4 and ran.stdout == "gpu\n"
    assert cli("host", "stop", "g").exit_code == 0
    assert cli("host", "start", "g").exit_code == 0
    assert hosts(cli)["g"]["resources"]["gpus"] == "T4"
    assert cli("host", "destroy", "g", "--yes").exit_code == 0


def test_list_reads_every_page_of_sandboxes(cli, standin_settings, standin) -> None:
    standin.page = 3
    names = [f"h{i}" for i in range(7)]
    created = cli("host", "create", *names, "-p", "cloud")
    assert created.exit_code == 0, created.stderr
    before = standin.pages
    assert sorted(hosts(cli)) == sorted(names)
    assert standin.pages - before == 4  # 3 + 3 + 1 sandboxes, then an empty page ends it


# --- failure kinds, as the real SDK raises them --------------------------------------------


def test_a_wrong_token_is_unauthorised_with_the_fix(cli, standin_settings, monkeypatch) -> None:
    monkeypatch.setenv("MY_MODAL_SECRET", "as-not-the-secret")
    created = cli("host", "create", "web", "-p", "cloud")
    assert created.exit_code == 5, created.stderr
    assert "Modal refused provider 'cloud': Token validation failed" in created.stderr
    assert "check that $MY_MODAL_ID and $MY_MODAL_SECRET hold a valid Modal token" in created.stderr
    assert "as-not-the-secret" not in created.stderr and "Traceback" not in created.stderr
    listed = cli("host", "list", "-p", "cloud", "--format", "json")
    assert listed.exit_code == 6
    [error] = json.loads(listed.stdout)["errors"]
    assert error["kind"] == "unauthorised"


def test_an_image_modal_no_longer_has_is_not_found(cli, standin_settings, standin) -> None:
    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    assert cli("host", "stop", "web").exit_code == 0
    [image] = [i for i, files in standin.state.images.items() if files]
    del standin.state.images[image]  # gone on Modal's side, behind mngr's back
    started = cli("host", "start", "web")
    assert started.exit_code == 3, started.stderr
    assert f"modal start: Image {image} not found" in started.stderr
    assert hosts(cli)["web"]["state"] == "stopped"  # the record is kept: nothing is lost
    forgot = cli("host", "destroy", "web", "--yes", "--purge")  # the image's delete: not found
    assert forgot.exit_code == 0, forgot.stderr
    assert hosts(cli) == {}


def test_a_name_modal_already_has_is_a_conflict(cli, standin_settings, standin) -> None:
    app = cli("provider", "check", "cloud", "--format", "json")
    app_id = json.loads(app.stdout)["providers"][0]["details"]["app_id"]
    from modal_proto import api_pb2

    theirs = api_pb2.SandboxCreateRequest(app_id=app_id, definition=api_pb2.Sandbox(name="web"))
    standin.state.images["im-base"] = None
    theirs.definition.image_id = "im-base"
    standin.call("SandboxCreate", theirs)  # a sandbox named web that mngr did not make
    created = cli("host", "create", "web", "-p", "cloud")
    assert created.exit_code == 1, created.stderr
    assert "already exists" in created.stderr and "Traceback" not in created.stderr
    again = shim_error("create", "--name=web", "--host-id=host-" + "0" * 32, "--created-at=x")
    assert again["kind"] == "conflict"


def test_failed_precondition_and_aborted_are_conflicts(cli, standin_settings, standin) -> None:
    from grpclib import Status

    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    for status in (Status.FAILED_PRECONDITION, Status.ABORTED):
        standin.state.faults["TaskSnapshotFilesystem"] = (status, "sandbox is busy snapshotting")
        snap = cli("host", "snapshot", "create", "web", "--name", "now")
        assert snap.exit_code == 1, snap.stderr
        assert "modal snapshot: sandbox is busy snapshotting" in snap.stderr
        [box] = running(standin)
        flags = [f"--sandbox-id={box.id}", "--host-id=" + box.tags["mngr-host-id"]]
        flags += ["--snapshot-id=snap-" + "1" * 32, "--name=now", "--created-at=x"]
        assert shim_error("snapshot", *flags)["kind"] == "conflict"
    standin.state.faults.clear()
    assert cli("host", "snapshot", "create", "web", "--name", "now").exit_code == 0


def test_no_modal_at_the_address_is_cannot_reach_modal_at_once(
    cli, standin_settings, monkeypatch
) -> None:
    import socket
    import time

    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # takes connections and never says a word
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        for sock, says in ((closed, "refused"), (silent, "timed out")):
            port = sock.getsockname()[1]
            monkeypatch.setenv("MODAL_SERVER_URL", f"http://127.0.0.1:{port}")
            started = time.monotonic()
            listed = cli("host", "list", "-p", "cloud", "--format", "json")
            assert time.monotonic() - started < 15  # the SDK alone retries for about a minute
            assert listed.exit_code == 6
            [error] = json.loads(listed.stdout)["errors"]
            assert error["kind"] == "unreachable", error
            assert f"cannot reach Modal (127.0.0.1:{port}: " in error["message"]
            assert says in error["message"].lower()
            checked = cli("provider", "check", "cloud")
            assert checked.exit_code == 1 and "Modal is unreachable (modal check)" in checked.stdout


def test_records_an_older_mngr_kept_in_a_dict_move_to_the_volume_once(
    cli, standin_settings, standin
) -> None:
    old_id, snap_id = "host-" + "a" * 32, "snap-" + "b" * 32
    files = standin.state.root / "old-image"
    files.mkdir()
    (files / "kept").write_text("from before\n")
    standin.state.images["im-old"] = files
    host = {
        "id": old_id,
        "name": "old",
        "created_at": "2026-11-01T00:00:00Z",
        "image": "x",
        "tags": {"team": "ml"},
        "spec": {"cpu": 1.0},
        "stopped_at": "2026-11-02T00:00:00Z",
        "snapshot_id": snap_id,
        "image_id": "im-old",
        "provider": "cloud",
    }
    snap = {
        "id": snap_id,
        "name": "old-stop",
        "host": "old",
        "host_id": old_id,
        "created_at": "2026-11-02T00:00:00Z",
        "image_id": "im-old",
        "provider": "cloud",
    }
    theirs = {**host, "id": "host-" + "c" * 32, "name": "theirs", "provider": "other"}
    seed = (  # as the older mngr wrote them: JSON text values in a modal.Dict, by the SDK
        "import json, sys, modal\n"
        "d = modal.Dict.from_name('mngr-cloud-records', create_if_missing=True)\n"
        "for key, value in json.loads(sys.argv[1]).items():\n"
        "    d.put(key, json.dumps(value))\n"
    )
    records = {f"host:{old_id}": host, f"snap:{snap_id}": snap, f"host:{theirs['id']}": theirs}
    env = dict(os.environ, MODAL_TOKEN_ID=os.environ["MY_MODAL_ID"])
    env["MODAL_TOKEN_SECRET"] = os.environ["MY_MODAL_SECRET"]
    done = subprocess.run(
        [sys.executable, "-c", seed, json.dumps(records)], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert len(standin.state.dicts) == 1

    old = hosts(cli)["old"]
    assert old["state"] == "stopped" and old["tags"] == {"team": "ml"}
    assert old["id"] == old_id and old["snapshots"] == [snap_id]
    assert standin.state.dicts == {}  # read once, then deleted
    [volume] = standin.state.files.values()
    assert sorted(volume) == sorted(f"{k.replace(':', '/')}.json" for k in records)  # all kept
    assert hosts(cli)["old"]["state"] == "stopped"  # from the volume now

    assert cli("host", "start", "old").exit_code == 0
    kept = cli("host", "exec", "old", "--", "cat", "kept")
    assert kept.exit_code == 0 and kept.stdout == "from before\n"


def test_the_guard_refuses_modals_own_address_before_any_lookup(standin, monkeypatch) -> None:
    """What keeps these tests on loopback can fail them: without MODAL_SERVER_URL the shim
    would go to the SDK's defaults, api.modal.com and api.modal2.com; the guard refuses the name
    look-ups themselves."""
    from pathlib import Path

    monkeypatch.delenv("MODAL_SERVER_URL")
    report = shim_error("list")
    assert report["kind"] == "unreachable"
    assert "cannot reach Modal (api.modal.com:443: test network guard" in report["message"]
    log = Path(os.environ["MODAL_TEST_NET_LOG"])
    assert log.read_text() == "lookup api.modal.com\nlookup api.modal2.com\n"  # its fallback
    log.unlink()  # seen; the fixture fails any test that leaves one
