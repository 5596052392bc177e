"""A server that goes away, concurrent creates, and bad request bodies."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from urllib.parse import urlsplit

import pytest

from tests.server.conftest import RW_TOKEN, hosts_of

pytestmark = pytest.mark.server


def test_server_stopped_mid_list_is_an_error_row_and_the_rest_is_listed(
    team, mngr, user_settings
) -> None:
    assert mngr("host", "create", "remote-a", "-p", "team").exit_code == 0
    assert mngr("host", "create", "local-a", "-p", "local").exit_code == 0
    code, doc = hosts_of(mngr, "-p", "team", "-p", "local")
    assert code == 0 and len(doc["hosts"]) == 2
    assert team.stop() == 0  # SIGTERM: a clean shutdown
    code, doc = hosts_of(mngr, "-p", "team", "-p", "local")
    assert code == 6
    assert [(h["name"], h["provider"]) for h in doc["hosts"]] == [("local-a", "local")]
    [row] = doc["errors"]
    assert row["provider"] == "team" and row["kind"] == "unreachable"
    assert "cannot reach" in row["message"] and "\n" not in row["message"]
    # A verb on a host of that provider cannot tell whether it exists: never "not found".
    stopped = mngr("host", "stop", "remote-a", "-p", "team")
    assert stopped.exit_code == 1 and "cannot tell whether host" in stopped.stderr


def test_server_frozen_mid_list_times_out_without_blocking_others(
    serve, client_settings, mngr
) -> None:
    server = serve()
    client_settings(extra={"team": {"timeout_s": 1.5}}, team=server)
    assert mngr("host", "create", "remote-a", "-p", "team").exit_code == 0
    assert mngr("host", "create", "local-a", "-p", "local").exit_code == 0
    os.kill(server.proc.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        code, doc = hosts_of(mngr, "-p", "team", "-p", "local")
        assert time.monotonic() - started < 10
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert code == 6
    assert [h["name"] for h in doc["hosts"]] == ["local-a"]
    [row] = doc["errors"]
    assert row["provider"] == "team" and row["kind"] == "timeout"


def test_remote_provider_failures_are_error_rows_beside_the_other_hosts(
    serve, client_settings, mngr
) -> None:
    server = serve(
        "--provider", "local", "--provider", "broken",
        settings='[providers.broken]\nbackend = "docker"\nbinary = "/nonexistent/docker"\n',
    )  # fmt: skip
    client_settings(team=server)
    assert mngr("host", "create", "ok", "-p", "team").exit_code == 0
    assert mngr("host", "snapshot", "create", "ok", "-p", "team", "-n", "s1").exit_code == 0
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 6
    assert [h["name"] for h in doc["hosts"]] == ["ok"]
    [row] = doc["errors"]
    assert row["provider"] == "team" and row["kind"] == "vendor-missing"
    assert "remote provider 'broken'" in row["message"]
    # Snapshots too: the healthy remote provider's are listed and can be used.
    listed = mngr("host", "snapshot", "list", "-p", "team", "--format", "json")
    assert listed.exit_code == 6
    doc = json.loads(listed.stdout)
    assert [s["name"] for s in doc["snapshots"]] == ["s1"]
    assert [e["kind"] for e in doc["errors"]] == ["vendor-missing"]
    restored = mngr("host", "create", "again", "-p", "team", "--from-snapshot", "s1")
    assert restored.exit_code == 0, restored.stderr


def test_two_concurrent_creates_of_one_name_end_with_one_host(server) -> None:
    racers = 8
    barrier = threading.Barrier(racers)
    statuses: list[int] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        answer = server.api("POST", "/v1/hosts", {"name": "race", "tags": {"n": "1"}})
        with lock:
            statuses.append(answer.status)

    threads = [threading.Thread(target=create) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [201] + [409] * (racers - 1)
    listed = server.api("GET", "/v1/hosts").body
    assert [h["name"] for h in listed["hosts"]] == ["race"]


def test_concurrent_creates_through_two_clients_end_with_one_host(team, mngr) -> None:
    """Two client mngr processes (threads of this one) race for one name."""
    from mngr.cli import run

    codes: list[int] = []
    barrier = threading.Barrier(2)

    def create() -> None:
        barrier.wait()
        codes.append(run(["host", "create", "same", "-p", "team"]))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(codes) == [0, 1]
    code, doc = hosts_of(mngr, "-p", "team")
    assert [h["name"] for h in doc["hosts"]] == ["same"]


BAD_BODIES = [
    ("POST", "/v1/hosts", b"{not json", 422),
    ("POST", "/v1/hosts", b"[]", 422),
    ("POST", "/v1/hosts", b"", 422),
    ("POST", "/v1/hosts", {}, 422),
    ("POST", "/v1/hosts", {"name": "Upper"}, 422),
    ("POST", "/v1/hosts", {"name": "a b"}, 422),
    ("POST", "/v1/hosts", {"name": "a;rm -rf"}, 422),
    ("POST", "/v1/hosts", {"name": "$(id)"}, 422),
    ("POST", "/v1/hosts", {"name": ".."}, 422),
    ("POST", "/v1/hosts", {"name": "a/b"}, 422),
    ("POST", "/v1/hosts", {"name": "web\n"}, 422),
    ("POST", "/v1/hosts", {"name": "x" * 64}, 422),
    ("POST", "/v1/hosts", {"name": ""}, 422),
    ("POST", "/v1/hosts", {"name": 7}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "surprise": 1}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "tags": {"mngr-id": "x"}}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "tags": {"k": "v" * 300}}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "tags": {"k": "a\x00b"}}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "tags": {"k": 1}}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "tags": ["k=v"]}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "image": "--privileged"}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "image": "a b"}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "options": {"gpu": 1}}, 400),
    ("POST", "/v1/hosts", {"name": "ok", "options": "gpu"}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "provider": "nope"}, 404),
    ("POST", "/v1/hosts", {"name": "ok", "provider": "Bad Name"}, 422),
    ("POST", "/v1/hosts", {"name": "ok", "from_snapshot": "snap-missing"}, 404),
    ("POST", "/v1/hosts", {"name": "ok", "extra": "x" * 70_000}, 413),
    ("POST", "/v1/hosts/nope/stop", None, 404),
    ("POST", "/v1/hosts/nope/stop", {"snapshot": "maybe"}, 422),
    ("POST", "/v1/hosts/Bad/stop", None, 422),
    ("POST", "/v1/hosts/nope.other/start", None, 404),
    ("POST", "/v1/hosts/nope/snapshots", {"name": "UPPER"}, 422),
    ("DELETE", "/v1/hosts/nope", None, 404),
    ("DELETE", "/v1/hosts/nope?force=perhaps", None, 422),
    ("DELETE", "/v1/snapshots/nope", None, 404),
    ("GET", "/v1/hosts?provider=nope", None, 404),
    ("GET", "/v1/hosts?provider=..%2F", None, 400),
    ("GET", "/v1/snapshots?host=A%20B", None, 422),
    ("GET", "/v1/nothing-here", None, 404),
    ("PUT", "/v1/hosts", None, 405),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_BODIES)
def test_bad_requests_get_a_4xx_json_error(shared_server, method, path, body, status) -> None:
    raw = body if isinstance(body, bytes) else None
    server = shared_server
    answer = server.api(
        method,
        path,
        None if raw is not None else body,
        raw=raw,
        headers={"Content-Type": "application/json"} if raw is not None else None,
    )
    assert answer.status == status, answer.body
    error = answer.body["error"]
    assert error["kind"] and error["message"]
    assert "Traceback" not in error["message"]
    assert not (server.data_dir / "ok").exists()


def test_a_stopped_host_can_be_snapshotted_and_errors_never_500(server) -> None:
    assert server.api("POST", "/v1/hosts", {"name": "h"}).status == 201
    assert server.api("POST", "/v1/hosts/h/stop", {"snapshot": True}).status == 200
    assert server.api("POST", "/v1/hosts/h/stop").status == 200  # twice is fine
    made = server.api("POST", "/v1/hosts/h.local/snapshots", {"name": "s"})
    assert made.status == 201
    snap_id = made.body["snapshot"]["id"]
    listed = server.api("GET", "/v1/snapshots?host=h").body["snapshots"]
    assert snap_id in [s["id"] for s in listed] and len(listed) == 2
    again = server.api("POST", "/v1/hosts", {"name": "h2", "from_snapshot": snap_id})
    assert again.status == 201 and again.body["host"]["image"] == snap_id
    assert server.api("DELETE", f"/v1/snapshots/{snap_id}").status == 200
    assert server.api("DELETE", f"/v1/snapshots/{snap_id}").status == 404
    assert server.api("DELETE", "/v1/hosts/h?purge=true").status == 200
    assert server.api("GET", "/v1/snapshots").body["snapshots"] == []
    assert RW_TOKEN not in server.log()


def test_a_chunked_body_over_the_limit_is_refused_while_reading(shared_server) -> None:
    def post_chunked(payload: bytes) -> tuple[int, dict]:
        parts = urlsplit(shared_server.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        chunks = (payload[i : i + 4096] for i in range(0, len(payload), 4096))
        conn.request(
            "POST",
            "/v1/hosts",
            body=chunks,
            headers={
                "Authorization": f"Bearer {RW_TOKEN}",
                "Content-Type": "application/json",
            },
            encode_chunked=True,
        )
        response = conn.getresponse()
        answer = response.status, json.loads(response.read())
        conn.close()
        return answer

    big = json.dumps({"name": "chunky", "tags": {"k": "v" * 100_000}}).encode()
    status, body = post_chunked(big)
    assert status == 413 and "larger than" in body["error"]["message"]
    status, body = post_chunked(json.dumps({"name": "chunky"}).encode())
    assert status == 201 and body["host"]["name"] == "chunky"
