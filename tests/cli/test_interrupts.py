"""Ctrl-C and SIGTERM during a create: what was allocated is undone, exit 130."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN_MNGR = Path(__file__).parents[1] / "support" / "run_mngr.py"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_create_of_several_hosts_undoes_them(fake_providers, sig) -> None:
    dirs = fake_providers(p="tag:hang")
    proc = subprocess.Popen(
        [sys.executable, str(RUN_MNGR), "host", "create", "a", "b", "c", "-p", "p"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = dirs["p"] / "calls.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until all three hang in their `tag` step
        if log.exists() and log.read_text().count("tag ") == 3:
            break
        time.sleep(0.05)
    assert len(list(dirs["p"].glob("*.host"))) == 3
    proc.send_signal(sig)
    code = proc.wait(30)
    assert code == 130, proc.stderr.read()
    assert list(dirs["p"].glob("*.host")) == []
    calls = log.read_text().splitlines()
    assert sorted(c for c in calls if c.startswith("delete")) == [
        "delete a",
        "delete b",
        "delete c",
    ]


def test_ctrl_c_in_a_create_of_several_says_which_were_kept_and_which_rolled_back(
    fake_providers,
) -> None:
    dirs = fake_providers(p="tag:hang@c")
    proc = subprocess.Popen(
        [sys.executable, str(RUN_MNGR), "host", "create", "a", "b", "c", "-p", "p"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = dirs["p"] / "calls.log"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # a and b made, c hanging in its `tag` step
        calls = log.read_text().splitlines() if log.exists() else []
        if {"tag a", "tag b", "tag c"} <= set(calls):
            break
        time.sleep(0.05)
    time.sleep(0.5)  # a and b finish their plans
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    err = proc.stderr.read()
    assert code == 130, err
    assert "created before the interrupt, kept: a.p, b.p" in err
    assert "rolled back: c.p" in err
    assert sorted(p.name for p in dirs["p"].glob("*.host")) == ["a.host", "b.host"]
