"""The `mngr` backend against small stdlib HTTP servers that misbehave: redirects (the token
must not follow), answers that are not JSON, bare 5xx pages, bad records."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.server.conftest import RW_TOKEN, TOKEN_ENV

pytestmark = pytest.mark.server


class Stub:
    """A loopback HTTP server answering every request with `answer(path) -> (status, headers,
    body)`, recording the Authorization header of each request."""

    def __init__(self, answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> None:
        self.seen: list[tuple[str, str | None]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                stub.seen.append((self.path, self.headers.get("Authorization")))
                status, headers, body = answer(self.path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub(monkeypatch) -> Iterator[Callable[..., Stub]]:
    monkeypatch.setenv(TOKEN_ENV, RW_TOKEN)
    made: list[Stub] = []

    def make(answer: Callable[[str], tuple[int, dict[str, str], bytes]]) -> Stub:
        made.append(Stub(answer))
        return made[-1]

    yield make
    for server in made:
        server.close()


def backend_for(url: str) -> Any:
    from mngr_backends.mngr_remote import MngrBackend, MngrRemoteConfig

    from mngr.runner import Runner

    config = MngrRemoteConfig(
        name="team", backend="mngr", url=url, token_env=TOKEN_ENV, timeout_s=5
    )
    return MngrBackend(config, Runner())


def json_answer(status: int, doc: Any) -> Callable[[str], tuple[int, dict[str, str], bytes]]:
    body = json.dumps(doc).encode()
    return lambda path: (status, {"Content-Type": "application/json"}, body)


def test_a_redirect_is_an_error_and_the_token_does_not_follow(stub) -> None:
    from mngr.errors import UnreachableError

    elsewhere = stub(json_answer(200, {"hosts": [], "errors": []}))
    redirecting = stub(lambda path: (302, {"Location": elsewhere.url + path}, b""))
    with pytest.raises(UnreachableError, match="redirected"):
        backend_for(redirecting.url).list_hosts()
    assert redirecting.seen == [("/v1/hosts", f"Bearer {RW_TOKEN}")]
    assert elsewhere.seen == []


def test_an_answer_that_is_not_json_is_bad_output(stub) -> None:
    from mngr.errors import VendorOutputError

    html = stub(lambda path: (200, {"Content-Type": "text/html"}, b"<html>proxy login</html>"))
    with pytest.raises(VendorOutputError, match="other than JSON"):
        backend_for(html.url).list_hosts()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"hosts": "nope"}, "without a list of hosts"),
        ({"hosts": [{"name": "x"}]}, "host record mngr cannot read"),
        ([], "without a list of hosts"),
    ],
)
def test_records_it_cannot_read_are_bad_output(stub, doc, message) -> None:
    from mngr.errors import VendorOutputError

    server = stub(json_answer(200, doc))
    with pytest.raises(VendorOutputError, match=message):
        backend_for(server.url).list_hosts()


def test_unknown_host_fields_and_states_are_tolerated(stub) -> None:
    row = {
        "id": "host-" + "0" * 32,
        "name": "web",
        "provider": "aws-prod",
        "backend": "aws",
        "state": "hibernating",
        "resources": {"cpus": 2, "tpus": 8},
        "new_field": True,
    }
    server = stub(json_answer(200, {"hosts": [row], "errors": []}))
    [host] = backend_for(server.url).list_hosts()
    assert host.provider == "team" and host.state == "unknown" and host.resources.cpus == 2
    assert host.address["provider"] == "aws-prod" and host.handle == "aws-prod"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (502, b"<html>Bad Gateway</html>", "UnreachableError"),
        (503, b"", "UnreachableError"),
        (500, b"oops", "MngrError"),
        (404, b"", "NotFoundError"),
        (409, json.dumps({"error": {"kind": "conflict", "message": "taken"}}).encode(), "Conf"),
        (401, b"", "UnauthorisedError"),
        (403, b"{}", "UnauthorisedError"),
        (418, b"", "UsageError"),
    ],
)
def test_http_errors_map_to_mngr_errors(stub, status, body, error) -> None:
    from mngr.errors import MngrError

    server = stub(lambda path: (status, {}, body))
    with pytest.raises(MngrError) as info:
        backend_for(server.url).list_hosts()
    assert type(info.value).__name__.startswith(error)
    assert RW_TOKEN not in str(info.value)


def test_destroy_of_a_host_already_gone_is_not_an_error(stub) -> None:
    from mngr.plan import execute
    from mngr.records import Host

    server = stub(json_answer(404, {"error": {"kind": "not-found", "message": "no host"}}))
    backend = backend_for(server.url)
    host = Host(id="host-" + "1" * 32, name="web", provider="team", backend="mngr", handle="p")
    execute(backend.destroy_plan(host, force=True), backend)
    assert server.seen == [(f"/v1/hosts/{host.id}?provider=p&force=true", f"Bearer {RW_TOKEN}")]


def test_nothing_listens_is_unreachable(stub) -> None:
    from mngr.errors import UnreachableError

    server = stub(json_answer(200, {}))
    url = server.url
    server.close()
    with pytest.raises(UnreachableError, match="cannot reach"):
        backend_for(url).list_hosts()


def test_an_answer_over_the_size_cap_is_refused_without_reading_it_all(stub, monkeypatch) -> None:
    from mngr.errors import VendorOutputError
    from mngr.toolkit import http

    monkeypatch.setattr(http, "MAX_RESPONSE_BYTES", 1 << 20)
    huge = b'{"hosts": [' + b" " * (3 << 20) + b"]}"
    server = stub(lambda path: (200, {"Content-Type": "application/json"}, huge))
    with pytest.raises(VendorOutputError, match=r"/v1/hosts answered with more than 1 MiB"):
        backend_for(server.url).list_hosts()
    fits = stub(json_answer(200, {"hosts": [], "errors": [], "pad": "x" * (1 << 19)}))
    assert backend_for(fits.url).list_hosts() == []


def test_a_token_sent_over_plain_http_off_loopback_is_warned_about_once(
    stub, monkeypatch, capsys
) -> None:
    """The request goes to a loopback proxy: nothing leaves the machine."""
    proxy = stub(json_answer(200, {"hosts": [], "errors": []}))
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    remote = backend_for("http://192.0.2.10:8421")
    remote.list_hosts()
    remote.list_hosts()
    assert [path for path, _ in proxy.seen] == ["http://192.0.2.10:8421/v1/hosts"] * 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: provider 'team' sends its token over plain http")
    assert "192.0.2.10" in line and RW_TOKEN not in line
    local = stub(json_answer(200, {"hosts": [], "errors": []}))
    backend_for(local.url).list_hosts()  # loopback: no warning
    assert capsys.readouterr().err == ""
