"""The API app in-process (FastAPI's test client) over a stub backend: how each mngr error
becomes an HTTP status, and options a backend keeps away from remote callers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pydantic import Field

from mngr.backend import Backend, CreateOptions, CreateRequest
from mngr.errors import (
    ConflictError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UnsupportedError,
    UsageError,
    VendorMissingError,
    VendorOutputError,
    VendorTimeoutError,
)
from mngr.plan import Plan
from mngr.records import Host
from tests.conftest import require
from tests.server.conftest import RO_TOKEN, RW_TOKEN, server_deps_installed

pytestmark = pytest.mark.server

RAISED = {
    "usage": (UsageError, 400),
    "unsupported": (UnsupportedError, 422),
    "notfound": (NotFoundError, 404),
    "conflict": (ConflictError, 409),
    "unauthorised": (UnauthorisedError, 502),
    "unreachable": (UnreachableError, 502),
    "timeout": (VendorTimeoutError, 504),
    "badoutput": (VendorOutputError, 502),
    "vendormissing": (VendorMissingError, 503),
    "interrupted": (InterruptedByUser, 503),
    "plain": (MngrError, 502),
}


class StubOptions(CreateOptions):
    size: int | None = None
    mount: list[str] = Field(default_factory=list, json_schema_extra={"serve": False})


class StubBackend(Backend):
    """Creates nothing: `image` names the error its create raises."""

    name = "stub"
    create_options_model = StubOptions

    def list_hosts(self) -> list[Host]:
        return []

    def create_plan(self, request: CreateRequest) -> Plan:
        if request.image == "crash":
            raise RuntimeError("secret internals")
        cls, _ = RAISED[request.image or "plain"]
        raise cls(f"stub says {request.image}")

    def destroy_plan(self, host: Host, *, force: bool = False, purge: bool = False) -> Plan:
        return Plan([])


@pytest.fixture
def client(user_settings: Path):
    require(
        server_deps_installed() and importlib.util.find_spec("httpx") is not None,
        "fastapi, uvicorn and httpx (pip install 'mngr[server]')",
    )
    from fastapi.testclient import TestClient

    from mngr import config, registry
    from mngr.server import Token, create_app

    registry.register("stub", StubBackend)
    user_settings.write_text('[providers.stubby]\nbackend = "stub"\n')
    tokens = [Token(RW_TOKEN.encode(), False), Token(RO_TOKEN.encode(), True)]
    app = create_app(config.load(), tokens)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {RW_TOKEN}"
        yield test_client
    registry.unregister("stub")


@pytest.mark.parametrize("image", sorted(RAISED))
def test_each_error_kind_has_its_status(client, image) -> None:
    cls, status = RAISED[image]
    answer = client.post("/v1/hosts", json={"name": "x", "provider": "stubby", "image": image})
    assert answer.status_code == status
    assert answer.json() == {"error": {"kind": cls.kind, "message": f"stub says {image}"}}


def test_an_unexpected_exception_is_a_500_without_internals(client) -> None:
    answer = client.post("/v1/hosts", json={"name": "x", "provider": "stubby", "image": "crash"})
    assert answer.status_code == 500
    assert answer.json()["error"]["kind"] == "internal"
    assert "secret internals" not in answer.text


def test_options_are_validated_against_the_backend_model(client) -> None:
    base = {"name": "x", "provider": "stubby", "image": "usage"}
    assert client.post("/v1/hosts", json={**base, "options": {"size": "2"}}).status_code == 400
    wrong = client.post("/v1/hosts", json={**base, "options": {"size": "big"}})
    assert wrong.status_code == 400 and wrong.json()["error"]["message"].startswith("options.size")
    unknown = client.post("/v1/hosts", json={**base, "options": {"gpu": 1}})
    assert "options.gpu" in unknown.json()["error"]["message"]


def test_options_marked_serve_false_are_refused_from_remote_callers(client) -> None:
    answer = client.post(
        "/v1/hosts", json={"name": "x", "provider": "stubby", "options": {"mount": ["/:/host"]}}
    )
    assert answer.status_code == 400
    assert "does not take this option through mngr serve" in answer.json()["error"]["message"]


def test_providers_lists_capabilities(client) -> None:
    rows = {p["name"]: p for p in client.get("/v1/providers").json()["providers"]}
    assert rows["stubby"]["backend"] == "stub" and rows["stubby"]["available"] is True


def test_read_only_token_is_checked_before_the_body(client) -> None:
    answer = client.post(
        "/v1/hosts", json={"bogus": True}, headers={"Authorization": f"Bearer {RO_TOKEN}"}
    )
    assert answer.status_code == 403  # a read-only caller learns nothing about the body
    assert answer.json()["error"]["kind"] == "unauthorised"
