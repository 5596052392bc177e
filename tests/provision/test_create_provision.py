"""`mngr host create --provision DEPLOY.py`: provisioned right after create; a host whose
provisioning failed is kept and tagged `mngr.provisioned=failed` (where its backend can change
tags: docker cannot, and says so), or destroyed with --destroy-on-failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.provision.conftest import on_host

GOOD = "from pyinfra.operations import files\nfiles.directory(name='made', path='made')\n"
BAD = "from pyinfra.operations import server\nserver.shell(name='boom', commands=['false'])\n"


@pytest.fixture(autouse=True)
def deploys() -> None:
    Path("good.py").write_text(GOOD)
    Path("bad.py").write_text(BAD)


def test_create_provisions_the_new_hosts(mngr) -> None:  # noqa: ANN001
    result = mngr("host", "create", "a", "b", "-p", "local", "--provision", "good.py", "-q")
    assert result.exit_code == 0, result.stderr
    assert "provisioned a.local: 1 operation(s), 1 changed" in result.stderr
    assert "provisioned b.local: 1 operation(s), 1 changed" in result.stderr
    assert len(result.stdout.split()) == 2  # both ids


def test_a_failed_provisioning_keeps_the_host_tagged(mngr) -> None:  # noqa: ANN001
    result = mngr("host", "create", "keep", "-p", "local", "--provision", "bad.py", "-q")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: provision keep.local: operation 'boom' failed (see pyinfra's output above); "
        "host kept, tagged mngr.provisioned=failed"
    )
    assert result.stdout.startswith("host-")  # still listed as made
    tagged = mngr("host", "list", "--tag", "mngr.provisioned=failed", "-q")
    assert tagged.stdout.split() == ["keep"]


def test_destroy_on_failure_removes_the_host(mngr) -> None:  # noqa: ANN001
    result = mngr(
        "host", "create", "gone", "-p", "local", "--provision", "bad.py", "--destroy-on-failure"
    )
    assert result.exit_code == 1
    assert "error: provision gone.local: operation 'boom' failed" in result.stderr
    assert "host destroyed (--destroy-on-failure)" in result.stderr
    assert result.stdout == ""
    assert mngr("host", "list", "-q").stdout == ""


def test_provision_flags_are_checked_before_anything_is_made(mngr) -> None:  # noqa: ANN001
    lone = mngr("host", "create", "x", "-p", "local", "--destroy-on-failure")
    assert lone.exit_code == 2 and "goes with --provision" in lone.stderr
    missing = mngr("host", "create", "x", "-p", "local", "--provision", "nope.py")
    assert missing.exit_code == 2 and "no deploy file 'nope.py'" in missing.stderr
    assert mngr("host", "list", "-q").stdout == ""


@pytest.mark.docker
def test_a_docker_host_is_kept_untagged_and_the_error_says_why(
    docker_engine, add_docker, mngr
) -> None:  # noqa: ANN001
    dk = add_docker(docker_engine)
    result = mngr("host", "create", "box", "-p", dk, "--provision", "bad.py", "-q")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: provision box.{dk}: operation 'boom' failed")
    assert "host kept, not tagged: backend 'docker' cannot change tags" in last
    assert mngr("host", "list", "-p", dk, "-q").stdout.split() == ["box"]


def test_dry_run_shows_the_planned_changes_and_makes_none(mngr) -> None:  # noqa: ANN001
    assert mngr("host", "create", "dry", "-p", "local", "-q").exit_code == 0
    result = subprocess.run(
        [sys.executable, "-m", "mngr", "host", "provision", "dry", "good.py", "--dry-run"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # pyinfra's output is on stderr, with mngr's messages
    assert "Detected changes" in result.stderr and "made" in result.stderr
    assert "dry run, nothing changed on dry.local" in result.stderr
    assert "made" not in on_host("dry.local", "ls").split()
    unknown = mngr("host", "provision", "dry", "nope", "good.py")
    assert unknown.exit_code == 3 and "no host 'nope'" in unknown.stderr
    bad_data = mngr("host", "provision", "dry", "good.py", "--data", "x")
    assert bad_data.exit_code == 2 and "expected KEY=VALUE" in bad_data.stderr
