"""Idle stop through a real `mngr serve` whose provider is docker on the real dockerd: the
client passes `--idle-timeout` with the create and the server applies it with its own
provider; `host touch` goes through the server's API."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Result
from tests.docker.conftest import docker_engine  # noqa: F401 - a real engine
from tests.docker.dockerd import TEST_IMAGE
from tests.server.conftest import ServeProcess, hosts_of

pytestmark = [pytest.mark.server, pytest.mark.docker]


@pytest.fixture
def docker_team(
    docker_engine,  # noqa: F811
    serve,
    client_settings,
) -> Iterator[Callable[..., ServeProcess]]:
    """start(**settings): a server whose one provider is docker on the real engine (with these
    extra settings), configured in the client as provider `team`."""
    names: list[str] = []

    def start(**settings: str) -> ServeProcess:
        name = f"dk-{secrets.token_hex(3)}"
        names.append(name)
        extra = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
        server = serve(
            "--provider", name,
            settings=f'[providers.{name}]\nbackend = "docker"\nhost = "{docker_engine.host}"\n'
            f'image = "{TEST_IMAGE}"\n{extra}',
        )  # fmt: skip
        client_settings(team=server)
        return server

    yield start
    for name in names:
        docker_engine.remove_labelled(name)


def host(mngr: Callable[..., Result], name: str = "web") -> dict:
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 0, doc
    [row] = [h for h in doc["hosts"] if h["name"] == name]
    return row


def wait_for(mngr: Callable[..., Result], wanted: str, within_s: float) -> None:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if host(mngr)["state"] == wanted:
            return
        time.sleep(0.5)
    raise AssertionError(f"web is {host(mngr)['state']}, not {wanted}")


def test_a_remote_host_stops_when_idle_touch_postpones_and_start_keeps_it(
    docker_team, mngr
) -> None:
    server = docker_team()
    made = mngr("host", "create", "web", "-p", "team", "--idle-timeout", "4s")
    assert made.exit_code == 0, made.stderr
    assert host(mngr)["idle_timeout_s"] == 4
    end = time.monotonic() + 9
    while time.monotonic() < end:  # twice the timeout, touched every 1.5s
        touched = mngr("host", "touch", "web", "-p", "team")
        assert touched.exit_code == 0, touched.stderr
        assert host(mngr)["state"] == "running"
        time.sleep(1.5)
    assert "/touch" in server.log()  # through the API, not an exec session
    wait_for(mngr, "stopped", within_s=20)

    started = mngr("host", "start", "web", "-p", "team")
    assert started.exit_code == 0, started.stderr
    row = host(mngr)
    assert (row["state"], row["idle_timeout_s"]) == ("running", 4)
    wait_for(mngr, "stopped", within_s=20)


def test_the_servers_provider_default_applies_unless_the_client_gives_one(
    docker_team, mngr
) -> None:
    docker_team(idle_timeout="2h")
    assert mngr("host", "create", "web", "-p", "team").exit_code == 0
    assert mngr("host", "create", "never", "-p", "team", "--idle-timeout", "0").exit_code == 0
    assert mngr("host", "create", "short", "-p", "team", "--idle-timeout", "30m").exit_code == 0
    assert host(mngr, "web")["idle_timeout_s"] == 7200
    assert host(mngr, "never")["idle_timeout_s"] is None
    assert host(mngr, "short")["idle_timeout_s"] == 1800
    refused = mngr("host", "touch", "never", "-p", "team")
    assert refused.exit_code == 2 and "has no idle timeout" in refused.stderr


def test_a_server_whose_provider_cannot_stop_when_idle_refuses_with_the_reason(team, mngr) -> None:
    refused = mngr("host", "create", "web", "-p", "team", "--idle-timeout", "30m")
    assert refused.exit_code != 0
    assert "cannot stop a host when it is idle" in refused.stderr
    assert hosts_of(mngr, "-p", "team")[1]["hosts"] == []
