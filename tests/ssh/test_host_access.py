"""ssh-config and forward of ssh pool hosts, against real sshd daemons on loopback."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.support import forwarding as fw

pytestmark = pytest.mark.sshd


def service():  # noqa: ANN201
    from mngr.config import load
    from mngr.service import Service

    return Service(load())


def test_host_list_json_gives_the_ssh_endpoint(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    assert mngr("host", "create", "web", "-p", "pool", "--machine", "m2").exit_code == 0
    [host] = json.loads(mngr("host", "list", "--format", "json").stdout)["hosts"]
    m2 = pool.machines[1]
    assert host["ssh_endpoint"] == {
        "host": m2.address,
        "port": m2.port,
        "user": pool.user,
        "identity_file": str(pool.client_key),
        "known_hosts": str(pool.known_hosts),
        "strict_host_key_checking": "yes",
    }


def test_ssh_config_lets_plain_ssh_reach_the_host_by_name(sshd_pool, mngr, tmp_path: Path) -> None:  # noqa: ANN001
    sshd_pool(2)
    assert mngr("host", "create", "web", "-p", "pool", "--machine", "m2").exit_code == 0
    result = mngr("host", "ssh-config", "web")
    assert result.exit_code == 0 and result.stderr == ""
    path = tmp_path / "ssh_config"
    path.write_text(result.stdout)
    for alias in ("web", "web.pool"):
        done = subprocess.run(
            ["ssh", "-F", str(path), "-o", "BatchMode=yes", alias, "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr


def test_forward_relays_concurrent_requests_and_large_bodies(
    sshd_pool,
    mngr,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    sshd_pool(1)
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0
    files = fw.site(tmp_path / "site")
    closed = fw.free_port()
    with fw.http_server(tmp_path / "site") as port, fw.digest_server() as sink:
        messages: list[str] = []
        ports = [str(port), f"0:{closed}", str(sink)]
        forward = service().forward("web", ports, report=messages.append)
        with fw.served(forward) as (open_port, closed_port, sink_port):
            assert open_port.remote == port and closed_port.remote == closed
            bodies = fw.get_concurrently(open_port.port)
            assert bodies == [files["index.html"]] * fw.REQUESTS
            assert fw.get(open_port.port, "/big.bin") == files["big.bin"]
            data = files["big.bin"]
            assert fw.upload(sink_port.port, data) == hashlib.sha256(data).hexdigest()
            assert fw.refused_or_closed(closed_port.port)
            [message] = fw.wait_for(lambda: messages)
            assert message.startswith(f"web.pool port {closed}: connection closed: ")
            assert fw.get(open_port.port) == files["index.html"]  # still forwarding
        assert fw.port_is_free(open_port.port)


def test_sigint_ends_the_forward_its_ssh_processes_and_frees_the_port(
    sshd_pool,
    mngr,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    sshd_pool(1)
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0
    fw.site(tmp_path / "site")
    with fw.http_server(tmp_path / "site") as port:
        proc, first = fw.start_forward_process("web", str(port))
        [bound] = first["forwards"]
        assert first["host"] == "web.pool" and bound["remote_port"] == port
        assert bound["address"] == "127.0.0.1"
        assert len(fw.get_concurrently(bound["port"])) == fw.REQUESTS
        fw.sigint_leaves_nothing(proc, bound["port"], processes=2)  # the master, one -W
