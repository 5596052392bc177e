"""The suite's private dockerd touches nothing of the machine's network.

A private dockerd with `--bridge=none` deletes any interface named `docker0`: it once removed
a running engine's bridge. The check runs in a throwaway network namespace standing in for
the machine, holding a `docker0` of its own, so it changes nothing on the real machine (and
no other suite's engine can delete the stand-in)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.docker import dockerd

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]

# Run inside the stand-in machine: give it a docker0, start and stop a private engine.
MACHINE = """
import json, os, subprocess
from tests.docker import dockerd
from tests.docker.test_dockerd_isolation import interfaces

subprocess.run(["ip", "link", "add", "docker0", "type", "bridge"], check=True)
before = interfaces()
engine = dockerd.start()
try:
    pid = engine.process.pid
    separate = {
        kind: os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
        for kind in ("net", "mnt")
    }
    answered = engine.answers()
finally:
    engine.stop()
print(json.dumps({"before": before, "after": interfaces(), "separate": separate,
                  "answered": answered}))
"""


def test_a_private_engine_removes_no_interface_of_the_machine() -> None:
    require(dockerd.missing() is None, dockerd.missing() or "")
    require(os.geteuid() == 0, "starting dockerd needs root")
    require(shutil.which("ip") is not None, "ip is not installed (Debian package iproute2)")
    machine_before = interfaces()
    done = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", MACHINE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert "docker0" in seen["before"]
    assert seen["after"] == seen["before"]  # docker0 (a running engine's bridge) survives
    assert seen["answered"] and seen["separate"] == {"net": True, "mnt": True}
    assert set(machine_before) <= set(interfaces())


def interfaces() -> list[str]:
    """From netlink: /sys/class/net shows the namespace /sys was mounted in."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, check=True).stdout
    return sorted(link["ifname"] for link in json.loads(out))
