"""A remote create whose answer does not come back in time: the client's host id goes with the
request, so a retry gets the same host back and the undo removes that host by its id, never
another host of the same name. A stand-in between client and a real `mngr serve` holds back
the server's answer to a create past the client's timeout."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from mngr.names import new_host_id
from tests.server.conftest import ServeProcess, hosts_of

pytestmark = pytest.mark.server

HELD_S = 4.0  # the client gives up after 1s


class SlowAnswers:
    """Forwards every request to the server at once; holds back the answer to a create."""

    def __init__(self, server: ServeProcess) -> None:
        self.seen: list[tuple[str, str, Any]] = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                stand_in.seen.append((self.command, self.path, json.loads(body or "null")))
                request = urllib.request.Request(
                    server.url + self.path, data=body, method=self.command
                )
                for key in ("Authorization", "Content-Type", "Accept"):
                    if self.headers.get(key):
                        request.add_header(key, self.headers[key])
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    with opener.open(request, timeout=30) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                if self.command == "POST" and self.path == "/v1/hosts":
                    time.sleep(HELD_S)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow(server: ServeProcess, client_settings) -> Iterator[SlowAnswers]:
    stand_in = SlowAnswers(server)
    stand_in_server = ServeProcess(server.root, server.proc, server.log_path, stand_in.url)
    client_settings(extra={"team": {"action_timeout_s": 1}}, team=stand_in_server)
    yield stand_in
    stand_in.close()


def test_a_create_that_times_out_is_undone_by_its_host_id(server, slow, mngr) -> None:
    created = mngr("host", "create", "web", "-p", "team")
    assert created.exit_code == 1 and "did not answer within 1s" in created.stderr
    assert "could not undo" not in created.stderr
    [(_, _, body), (method, path, _)] = slow.seen
    assert body["name"] == "web" and body["host_id"].startswith("host-")
    assert method == "DELETE" and path == f"/v1/hosts/{body['host_id']}?force=true"
    assert server.api("GET", "/v1/hosts").body["hosts"] == []  # nothing left behind
    assert not (server.data_dir / "web").exists()


def test_a_timed_out_create_of_a_taken_name_leaves_the_other_host(server, slow, mngr) -> None:
    existing = server.api("POST", "/v1/hosts", {"name": "web"}).body["host"]
    created = mngr("host", "create", "web", "-p", "team")
    assert created.exit_code == 1
    [(_, _, body), (method, path, _)] = slow.seen
    assert method == "DELETE" and path.startswith(f"/v1/hosts/{body['host_id']}?")
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 0 and [h["id"] for h in doc["hosts"]] == [existing["id"]]


def test_a_create_repeated_with_its_host_id_gets_the_same_host(server) -> None:
    host_id = new_host_id()
    first = server.api("POST", "/v1/hosts", {"name": "web", "host_id": host_id})
    assert first.status == 201 and first.body["host"]["id"] == host_id
    again = server.api("POST", "/v1/hosts", {"name": "web", "host_id": host_id})
    assert again.status == 201 and again.body["host"] == first.body["host"]
    other = server.api("POST", "/v1/hosts", {"name": "db", "host_id": host_id})
    assert other.status == 409
    assert other.body["error"]["message"] == f"host id {host_id} belongs to host web.local"
    assert [h["id"] for h in server.api("GET", "/v1/hosts").body["hosts"]] == [host_id]
    bad = server.api("POST", "/v1/hosts", {"name": "x", "host_id": "host-NOT-HEX"})
    assert bad.status == 422


def test_concurrent_creates_with_one_host_id_make_one_host(server) -> None:
    host_id = new_host_id()
    answers: list[Any] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        answers.append(server.api("POST", "/v1/hosts", {"name": "web", "host_id": host_id}))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status for a in answers] == [201] * 6
    assert {a.body["host"]["id"] for a in answers} == {host_id}
    assert len(server.api("GET", "/v1/hosts").body["hosts"]) == 1


def test_a_refused_create_is_not_undone(team, mngr, monkeypatch) -> None:
    from tests.server.conftest import RO_TOKEN, TOKEN_ENV

    monkeypatch.setenv(TOKEN_ENV, RO_TOKEN)
    created = mngr("host", "create", "web", "-p", "team")
    assert created.exit_code == 5 and "could not undo" not in created.stderr
    assert '"DELETE /v1/hosts/' not in team.log()
