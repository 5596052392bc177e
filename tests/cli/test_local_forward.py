"""`host forward` to a local host: its ports are this machine's, reached directly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mngr.errors import MngrError
from tests.support import forwarding as fw


def service():  # noqa: ANN201
    from mngr.config import load
    from mngr.service import Service

    return Service(load())


def test_forward_to_a_local_host_relays_requests_uploads_and_a_closed_port(
    mngr,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    assert mngr("host", "create", "web").exit_code == 0
    files = fw.site(tmp_path / "site")
    closed = fw.free_port()
    messages: list[str] = []
    with fw.http_server(tmp_path / "site") as port, fw.digest_server() as sink:
        ports = [str(port), f"0:{closed}", str(sink)]
        forward = service().forward("web", ports, report=messages.append)
        with fw.served(forward) as (web, shut, sink_port):
            assert fw.get_concurrently(web.port) == [files["index.html"]] * fw.REQUESTS
            assert fw.get(web.port, "/big.bin") == files["big.bin"]
            data = files["big.bin"]
            assert fw.upload(sink_port.port, data) == hashlib.sha256(data).hexdigest()
            assert fw.refused_or_closed(shut.port)
            assert fw.wait_for(lambda: messages) == [
                f"web.local port {closed}: connection closed: Connection refused"
            ]
            assert fw.get(web.port) == files["index.html"]
        assert fw.port_is_free(web.port)


def test_forward_to_a_stopped_host_is_refused(mngr) -> None:  # noqa: ANN001
    assert mngr("host", "create", "web").exit_code == 0
    assert mngr("host", "stop", "web").exit_code == 0
    with pytest.raises(MngrError, match="is stopped; start it first"):
        service().forward("web", ["8080"])


def test_sigint_ends_a_local_forward_and_frees_the_port(mngr, tmp_path: Path) -> None:  # noqa: ANN001
    assert mngr("host", "create", "web").exit_code == 0
    fw.site(tmp_path / "site")
    with fw.http_server(tmp_path / "site") as port:
        proc, first = fw.start_forward_process("web", str(port))
        [bound] = first["forwards"]
        assert fw.get(bound["port"])
        fw.sigint_leaves_nothing(proc, bound["port"], processes=0)  # relays are threads
