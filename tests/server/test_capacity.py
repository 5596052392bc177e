"""`mngr serve` stays up: a slow provider, many requests at once and half-open connections
take neither health nor the other routes with them."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.server.conftest import RO_TOKEN, RW_TOKEN, Answer, ServeProcess

pytestmark = pytest.mark.server


def request(
    server: ServeProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = RW_TOKEN,
    timeout_s: float = 30,
) -> tuple[Answer, float]:
    """(answer, seconds taken): plain http.client, light enough to run 40 of at once on a
    busy machine without timing the client instead of the server."""
    started = time.monotonic()
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        answer = Answer(
            response.status,
            json.loads(response.read()),
            {k.lower(): v for k, v in response.getheaders()},
        )
    finally:
        conn.close()
    return answer, time.monotonic() - started


def test_many_lists_of_a_slow_provider_leave_health_and_changes_answering(
    serve, tmp_path: Path
) -> None:
    vendor = tmp_path / "slow-docker"
    vendor.write_text("#!/bin/sh\nexec sleep 10\n")  # answers nothing until killed
    vendor.chmod(0o755)
    server = serve(
        "--provider", "local", "--provider", "slow", "--request-timeout", "4",
        settings=f'[providers.slow]\nbackend = "docker"\nbinary = "{vendor}"\ntimeout_s = 10\n',
    )  # fmt: skip
    answers: list[Answer] = []
    lock = threading.Lock()

    def list_hosts() -> None:
        answer, _ = request(server, "GET", "/v1/hosts", token=RO_TOKEN)
        with lock:
            answers.append(answer)

    started = time.monotonic()
    threads = [threading.Thread(target=list_hosts) for _ in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # the lists are waiting on the slow provider now
    health, took = request(server, "GET", "/v1/health", token=None)
    assert health.status == 200 and took < 2
    created, took = request(server, "POST", "/v1/hosts", {"name": "web"})
    assert created.status == 201 and took < 3, created.body
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - started < 9  # the server's deadline, not the provider's 10s
    listed = [a for a in answers if a.status == 200]
    busy = [a for a in answers if a.status != 200]
    assert len(answers) == 40 and len(listed) >= 8
    for answer in listed:
        [row] = answer.body["errors"]
        assert row["provider"] == "slow" and "within 4s" in row["message"]
    for answer in busy:
        assert answer.status == 503 and answer.body["error"]["kind"] == "busy"
        assert answer.headers["retry-after"] == "1"
