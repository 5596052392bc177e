"""The whole Modal lifecycle with the real SDK (no double): mngr -> real runner -> real shim
subprocess -> the installed `modal` SDK -> gRPC -> the local stand-in of Modal's API
(standin.py). Nothing leaves 127.0.0.0/8 (the `standin` fixture fails the test otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.modal.standin import TTL_NO_EXPIRY


def hosts(cli) -> dict[str, dict[str, Any]]:
    listed = cli("host", "list", "-p", "cloud", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    return {h["name"]: h for h in json.loads(listed.stdout)["hosts"]}


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
