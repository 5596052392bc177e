"""One `mngr host provision` over a local host, a container of the real Docker engine (busybox:
no package manager) and a machine of a real sshd pool, with real pyinfra: the deploy lands on
all three, a second run changes nothing, and a failing operation fails its host alone."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.provision.conftest import on_host

pytestmark = [pytest.mark.docker, pytest.mark.sshd, pytest.mark.slow]

DEPLOY = """\
from pyinfra import host
from pyinfra.operations import files, server

made = files.directory(name="conf folder", path="conf")
files.put(name="blob", src="blob.bin", dest="conf/blob.bin")
files.line(name="mode line", path="conf/app.ini", line="mode=" + host.data.get("mode", "dev"))
server.shell(name="first time only", commands=["echo once >> conf/log"], _if=made.did_change)
"""

FAILING = """\
from pyinfra import host
from pyinfra.operations import server

server.shell(name="break the docker one", commands=["false" if "dk-" in host.name else "true"])
server.shell(name="after it", commands=["echo after > after.txt"])
"""


def summary(stderr: str) -> dict[str, tuple[int, int]]:
    """`provisioned REF: N operation(s), M changed` lines -> {REF: (N, M)}."""
    found = re.findall(r"^provisioned (\S+): (\d+) operation\(s\), (\d+) changed$", stderr, re.M)
    return {ref: (int(n), int(m)) for ref, n, m in found}


def test_one_deploy_on_local_docker_and_ssh_then_again_changes_nothing(
    sshd_pool, docker_engine, add_docker, mngr, tmp_path: Path
) -> None:  # noqa: ANN001
    sshd_pool(1)
    dk = add_docker(docker_engine)
    for name, provider in (("lo", "local"), ("dc", dk), ("ss", "pool")):
        assert mngr("host", "create", name, "-p", provider, "-q").exit_code == 0
    blob = bytes(range(256)) * 512
    Path("blob.bin").write_bytes(blob)
    Path("deploy.py").write_text(DEPLOY)
    refs = ["lo.local", f"dc.{dk}", "ss.pool"]

    first = mngr("host", "provision", *refs, "deploy.py", "--data", "mode=prod")
    assert first.exit_code == 0, first.stderr
    assert summary(first.stderr) == {ref: (4, 4) for ref in refs}
    for ref in refs:
        assert on_host(ref, "cat", "conf/app.ini") == "mode=prod\n"
        assert on_host(ref, "cat", "conf/log") == "once\n"
        assert on_host(ref, "sha1sum", "conf/blob.bin").split()[0] == hashlib.sha1(blob).hexdigest()

    again = mngr("host", "provision", *refs, "deploy.py", "--data", "mode=prod")
    assert again.exit_code == 0, again.stderr
    assert summary(again.stderr) == {ref: (4, 0) for ref in refs}

    Path("failing.py").write_text(FAILING)
    failed = mngr("host", "provision", *refs, "failing.py")
    assert failed.exit_code == 6, failed.stderr
    assert f"error: provision dc.{dk}: operation 'break the docker one' failed" in failed.stderr
    assert set(summary(failed.stderr)) == {"lo.local", "ss.pool"}
    for ref in ("lo.local", "ss.pool"):
        assert on_host(ref, "cat", "after.txt") == "after\n"
    assert on_host(f"dc.{dk}", "ls").split().count("after.txt") == 0
