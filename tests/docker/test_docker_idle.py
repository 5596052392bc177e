"""Idle stop on the real dockerd: the container's first process is mngr's idle watcher, so a
host nobody uses stops by itself (mngr not running), and one in use does not."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.docker.conftest import DockerEnv

pytestmark = pytest.mark.docker

TIMEOUT = "4s"  # the watcher polls every second (a tenth of the timeout, at least 1s)


def state(service, provider: str, name: str = "web") -> str:
    [host] = [h for h in service().list_hosts([provider]).hosts if h.name == name]
    return host.state.value


def wait_for(service, provider: str, wanted: str, within_s: float, name: str = "web") -> float:
    """Seconds until the host is in `wanted` state; fails after `within_s`."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if state(service, provider, name) == wanted:
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"{name} is {state(service, provider, name)}, not {wanted}")


def stays(service, provider: str, wanted: str, for_s: float, name: str = "web") -> None:
    end = time.monotonic() + for_s
    while time.monotonic() < end:
        assert state(service, provider, name) == wanted
        time.sleep(0.5)


def test_an_idle_host_stops_by_itself_and_shows_its_timeout(
    docker_env: DockerEnv, service, mngr
) -> None:
    p = docker_env.provider
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider=p, idle_timeout=TIMEOUT))
    assert host.idle_timeout_s == 4
    pid1 = docker_env.engine.docker("exec", host.handle, "cat", "/proc/1/cmdline").stdout
    # The first process is docker's init over the watcher, not `sleep infinity`.
    assert "mngr-idle" in pid1 and "infinity" not in pid1

    listed = json.loads(mngr("host", "list", "-p", p, "-f", "json").stdout)["hosts"]
    assert listed[0]["idle_timeout_s"] == 4
    took = wait_for(service, p, "stopped", within_s=20)
    assert took < 12

    [stopped] = service().list_hosts([p]).hosts
    assert stopped.idle_timeout_s == 4
    assert stopped.last_activity_at is not None  # the last health check, kept by docker
    assert (
        "Exited (0)"
        in docker_env.engine.docker(
            "ps", "-a", "--filter", f"id={host.handle}", "--format", "{{.Status}}"
        ).stdout
    )


def test_a_host_with_an_exec_session_or_a_detached_process_does_not_stop(
    docker_env: DockerEnv, service
) -> None:
    p = docker_env.provider
    svc = service()
    svc.run(svc.prepare_create(["web", "bg"], provider=p, idle_timeout=TIMEOUT))
    session = subprocess.Popen(
        svc.exec_command("web", ["sh", "-c", "read line"]).argv, stdin=subprocess.PIPE
    )
    try:
        subprocess.run(svc.exec_command("bg", ["sleep", "9"], detach=True).argv, check=True)
        stays(service, p, "running", for_s=8, name="web")
        assert state(service, p, "bg") == "running"
    finally:
        session.communicate(b"done\n", timeout=10)
    # Once the session and the detached process end, both stop.
    wait_for(service, p, "stopped", within_s=20, name="web")
    wait_for(service, p, "stopped", within_s=20, name="bg")


def test_touch_postpones_and_restart_keeps_the_timeout(
    docker_env: DockerEnv, service, mngr
) -> None:
    p = docker_env.provider
    svc = service()
    svc.run_one(svc.prepare_create(["web"], provider=p, idle_timeout=TIMEOUT))
    end = time.monotonic() + 9
    while time.monotonic() < end:  # twice the timeout, touched every 1.5s
        assert mngr("host", "touch", "web", "-p", p).exit_code == 0
        assert state(service, p) == "running"
        time.sleep(1.5)
    listed = service().list_hosts([p]).hosts[0]
    assert listed.last_activity_at is not None
    wait_for(service, p, "stopped", within_s=20)

    assert mngr("host", "start", "web", "-p", p).exit_code == 0
    [started] = service().list_hosts([p]).hosts
    assert (started.state.value, started.idle_timeout_s) == ("running", 4)
    wait_for(service, p, "stopped", within_s=20)


def test_touch_refuses_a_host_without_an_idle_timeout(docker_env: DockerEnv, service, mngr):
    p = docker_env.provider
    svc = service()
    svc.run_one(svc.prepare_create(["web"], provider=p))
    result = mngr("host", "touch", "web", "-p", p)
    assert result.exit_code == 2
    assert "has no idle timeout" in result.stderr
    assert service().list_hosts([p]).hosts[0].idle_timeout_s is None


def test_the_provider_default_applies_and_zero_overrides_it(docker_env: DockerEnv, service):
    p = docker_env.add_provider(
        "idle", host=docker_env.engine.host, image="mngr-test-busybox:latest", idle_timeout="2h"
    )
    svc = service()
    svc.run_one(svc.prepare_create(["a"], provider=p))
    svc.run_one(svc.prepare_create(["b"], provider=p, idle_timeout="0"))
    timeouts = {h.name: h.idle_timeout_s for h in service().list_hosts([p]).hosts}
    assert timeouts == {"a": 7200, "b": None}


def test_the_watcher_does_not_count_its_own_health_check(docker_env: DockerEnv, service):
    """The health check runs `cat LAST_ACTIVITY` in the host every poll: not activity."""
    p = docker_env.provider
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider=p, idle_timeout="3s"))
    wait_for(service, p, "stopped", within_s=15)
    health = docker_env.engine.docker(
        "container", "inspect", "--format", "{{json .State.Health}}", host.handle
    ).stdout
    assert '"ExitCode":0' in health  # it ran, passed, and the host stopped regardless
