"""The shim with the real Modal SDK (no double): error kinds from its exception classes and
fast failure when no Modal server answers. Traffic goes to loopback only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpclib
import modal.exception as sdk
import pytest
from mngr_backends.modal_shim import REACH_S, _kind_of

from .conftest import COMMON, SHIM


@pytest.mark.parametrize(
    "error, kind",
    [
        (sdk.ConflictError, "conflict"),  # FAILED_PRECONDITION and ABORTED
        (sdk.AlreadyExistsError, "conflict"),
        (sdk.NotFoundError, "not-found"),
        (sdk.AuthError, "unauthorised"),
        (sdk.PermissionDeniedError, "unauthorised"),
        (sdk.ServiceError, "unreachable"),  # UNAVAILABLE, DEADLINE_EXCEEDED
        (sdk.InternalError, "error"),
        (sdk.InvalidError, "error"),
    ],
)
def test_error_kinds_come_from_the_sdk_classes_without_deprecated_reads(error, kind) -> None:
    exc = error("refused")
    exc.status = grpclib.Status.FAILED_PRECONDITION  # as the SDK's middleware sets it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading `.status` would warn: here it would raise
        assert _kind_of(exc) == kind


@pytest.fixture
def real_shim(tmp_path: Path):
    """Run the shim with the installed SDK against MODAL_SERVER_URL (a loopback address)."""

    def run(server_url: str, verb: str = "list") -> tuple[subprocess.CompletedProcess, float]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
        env.pop("PYTHONPATH", None)  # the real SDK, not the double
        env.update(
            HOME=str(tmp_path),
            MODAL_SERVER_URL=server_url,
            MODAL_TOKEN_ID="ak-test",
            MODAL_TOKEN_SECRET="as-test",
        )
        started = time.monotonic()
        done = subprocess.run(
            [*SHIM, verb, *COMMON, "--provider=cloud"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        return done, time.monotonic() - started

    return run


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that takes connections and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _unreachable_fast(done: subprocess.CompletedProcess, took: float) -> None:
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 1 and report["kind"] == "unreachable", done.stderr
    assert report["message"].startswith("cannot reach Modal (127.0.0.1:")
    assert "eprecat" not in done.stderr and "Traceback" not in done.stderr
    assert took < REACH_S + 10  # the SDK alone retries for about a minute


def test_a_closed_server_port_is_cannot_reach_modal_at_once(real_shim, closed_port) -> None:
    done, took = real_shim(f"http://127.0.0.1:{closed_port}")
    _unreachable_fast(done, took)
    assert "refused" in done.stderr.lower()


def test_a_server_that_never_answers_is_cannot_reach_modal_within_the_probe_deadline(
    real_shim, silent_listener
) -> None:
    done, took = real_shim(f"http://127.0.0.1:{silent_listener}")
    _unreachable_fast(done, took)
    assert "timed out" in done.stderr


def test_the_sdk_is_the_installed_one_not_the_double() -> None:
    import modal

    assert "fake_sdk" not in modal.__file__ and "+fake" not in modal.__version__
    assert sys.modules["modal"] is modal
