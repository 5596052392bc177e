"""`host forward` to a docker host over its transport (`docker exec -i C nc 127.0.0.1 PORT`),
against the real engine and busybox `httpd` / `nc` inside the test image."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from tests.docker.conftest import DockerEnv
from tests.support import forwarding as fw

WWW = "mkdir -p /www && echo '<p>hello from busybox</p>' > /www/index.html && "
WWW += "head -c 8388608 /dev/urandom > /www/big.bin"


def service():  # noqa: ANN201
    from mngr.config import load
    from mngr.service import Service

    return Service(load())


def start_servers(docker_env: DockerEnv, mngr) -> Callable[..., str]:  # noqa: ANN001
    """Create host `web` with httpd on 8080 and a sha256 sink on 9000; run(ARGV) in it."""
    p = docker_env.provider
    assert mngr("host", "create", "web", "-p", p).exit_code == 0
    [host] = mngr("host", "list", "-p", p, "--format", "json").json()["hosts"]

    def run(*argv: str) -> str:
        return docker_env.engine.docker("exec", host["address"]["container"], *argv).stdout

    run("sh", "-c", WWW)
    detached = ("host", "exec", "web", "-p", p, "--detach", "--")
    assert mngr(*detached, "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www").exit_code == 0
    assert mngr(*detached, "nc", "-ll", "-p", "9000", "-e", "sha256sum").exit_code == 0
    return run


def test_forward_to_a_container_relays_concurrent_requests_and_large_bodies(
    docker_env: DockerEnv,
    mngr,  # noqa: ANN001
) -> None:
    run = start_servers(docker_env, mngr)
    p = docker_env.provider
    index = run("cat", "/www/index.html").encode()
    big_sum = run("sha256sum", "/www/big.bin").split()[0]
    messages: list[str] = []
    forward = service().forward("web", ["8080", "0:8081", "9000"], p, report=messages.append)
    with fw.served(forward) as (web, closed, sink):
        fw.wait_listening(web.port)
        assert fw.get_concurrently(web.port) == [index] * fw.REQUESTS
        assert hashlib.sha256(fw.get(web.port, "/big.bin")).hexdigest() == big_sum
        data = fw.os.urandom(8 << 20)
        assert fw.upload(sink.port, data).split()[0] == hashlib.sha256(data).hexdigest()
        assert fw.refused_or_closed(closed.port)
        [message] = fw.wait_for(lambda: messages)
        assert message.startswith("web.dk-") and " port 8081: connection closed: " in message
        assert message.endswith("Connection refused")
        assert fw.get(web.port) == index  # the forward keeps running
    assert fw.port_is_free(web.port)


def test_sigint_ends_the_forward_and_its_docker_exec_and_frees_the_port(
    docker_env: DockerEnv,
    mngr,  # noqa: ANN001
) -> None:
    run = start_servers(docker_env, mngr)
    proc, first = fw.start_forward_process("web", "0:8080")
    [bound] = first["forwards"]
    relay = "nc 127.0.0.1 8080"
    fw.sigint_leaves_nothing(proc, bound["port"], 1, relaying=lambda: relay in run("ps"))
    # and inside the container, the relay's nc ends too (its stdin closed with docker exec)
    assert fw.wait_for(lambda: relay not in run("ps"), timeout=30)
