"""Parsing the shim's output (tests/fixtures/modal/) into mngr records, without processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mngr_backends.modal import (
    HostList,
    ModalBackend,
    ModalConfig,
    ShimHost,
    ShimSnapshot,
    SnapshotList,
    shim_report,
)

from mngr.errors import NotFoundError, UnauthorisedError, VendorCommandError
from mngr.records import HostState
from mngr.runner import Runner
from mngr.toolkit import vendor_json

FIXTURES = Path(__file__).parents[1] / "fixtures" / "modal"


@pytest.fixture
def backend() -> ModalBackend:
    return ModalBackend(ModalConfig(name="cloud", backend="modal"), Runner())


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def printed(model: type, name: str) -> object:
    return vendor_json.parse(model, read(name), name)


def test_list_gives_running_and_stopped_hosts(backend: ModalBackend) -> None:
    web, db = (h.record(backend) for h in printed(HostList, "list.json").hosts)
    assert web.state == HostState.RUNNING and web.handle.startswith("sb-")
    assert web.resources.cpus == 2.0 and web.resources.memory_gb == 4.0
    assert web.resources.gpus == "T4" and web.tags == {"team": "ml"}
    assert web.address == {"app": "mngr-cloud", "sandbox_id": web.handle}
    assert db.state == HostState.STOPPED and db.handle is None and db.address == {}
    assert db.image == "postgres:16" and db.snapshots == ["snap-" + "0" * 31 + "2"]
    assert web.unsupported == {} and "mngr host start db" in db.unsupported["snapshot"]
    assert {h.provider for h in (web, db)} == {"cloud"} and web.backend == "modal"


def test_create_stop_and_snapshot_outputs(backend: ModalBackend) -> None:
    created = printed(ShimHost, "create.json").record(backend)
    assert created.name == "web" and created.state == HostState.RUNNING
    stopped = printed(ShimHost, "stop.json").record(backend)
    assert stopped.name == "db" and stopped.state == HostState.STOPPED
    snap = printed(ShimSnapshot, "snapshot.json").record(backend)
    assert snap.name == "base" and snap.host == "web" and snap.handle.startswith("im-")


def test_list_snapshots_output(backend: ModalBackend) -> None:
    snapshots = printed(SnapshotList, "list-snapshots.json").snapshots
    names = [s.record(backend).name for s in snapshots]
    assert names == ["base", "db-stop-20260301t130000z"]


def test_the_error_is_the_last_json_line_after_sdk_warnings(backend: ModalBackend) -> None:
    stderr = read("error-token-missing.stderr")
    assert shim_report(stderr).kind == "unauthorised"
    error = backend.classify(VendorCommandError(["py", "-m", "shim", "list"], 5, "", stderr))
    assert isinstance(error, UnauthorisedError) and error.exit_code == 5
    assert "Token missing" in str(error) and "modal token new" in str(error)


def test_sdk_noise_after_the_error_line_keeps_the_error_kind(backend: ModalBackend) -> None:
    report = '{"kind": "not-found", "message": "no sandbox sb-1.", "fix": ""}'
    stderr = f"{report}\nException ignored in: <function Channel.__del__>\n"
    error = backend.classify(VendorCommandError(["py", "-m", "shim", "stop"], 3, "", stderr))
    assert isinstance(error, NotFoundError) and str(error) == "modal stop: no sandbox sb-1"
