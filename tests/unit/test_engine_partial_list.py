"""A provider that lists only part of its hosts (a `Listing` with errors): the engine shows the
hosts it got and one error row per part that failed, next to the other providers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mngr import config, registry
from mngr.backend import Backend, Listing, ProviderConfig
from mngr.engine import Engine
from mngr.errors import UnauthorisedError, UnreachableError
from mngr.records import Host


class HalfBackend(Backend):
    """Two parts: one answers with a host, two fail."""

    name = "half"
    config_model = ProviderConfig

    def list_hosts(self) -> Listing:
        host = Host(id="host-" + "1" * 32, name="up", provider=self.provider, backend=self.name)
        return Listing(
            [host],
            [UnreachableError("part b: connection refused"), UnauthorisedError("part c: denied")],
        )

    def create_plan(self, request):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def destroy_plan(self, host, *, force=False):  # noqa: ANN001, ANN201
        raise NotImplementedError


@pytest.fixture
def half(user_settings: Path):  # noqa: ANN201
    registry.register("half", HalfBackend)
    user_settings.write_text('[providers.pool]\nbackend = "half"\n')
    yield
    registry.unregister("half")


def test_partial_provider_lists_its_hosts_and_an_error_row_per_failed_part(half) -> None:  # noqa: ANN001
    result = Engine(config.load()).list_hosts(["pool", "local"])
    assert [h.name for h in result.hosts] == ["up"]
    assert [(e.provider, e.kind, e.message) for e in result.errors] == [
        ("pool", "unreachable", "part b: connection refused"),
        ("pool", "unauthorised", "part c: denied"),
    ]


def test_partial_list_is_exit_6_with_hosts_and_errors_in_json(half, capsys) -> None:  # noqa: ANN001
    import json

    from mngr.cli import run

    assert run(["host", "list", "-p", "pool", "--format", "json"]) == 6
    doc = json.loads(capsys.readouterr().out)
    assert [h["name"] for h in doc["hosts"]] == ["up"] and len(doc["errors"]) == 2


def test_a_host_on_a_failed_part_is_not_reported_missing(half) -> None:  # noqa: ANN001
    with pytest.raises(UnreachableError, match="cannot tell whether host 'down' exists"):
        Engine(config.load()).resolve_host("down", "pool")
    assert Engine(config.load()).resolve_host("up", "pool").name == "up"
