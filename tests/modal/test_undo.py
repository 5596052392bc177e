"""A failed Modal create undoes only what it made: the undo terminates sandboxes tagged with
this create's host id, never one found by name (the real SDK and the stand-in, through the
CLI)."""

from __future__ import annotations

import os
import subprocess
import sys

from grpclib import Status

from tests.modal.conftest import TOKEN_ID, TOKEN_SECRET


def sandbox_made_outside_mngr(name: str) -> None:
    """A sandbox of the provider's app with the host's name, made with the SDK, untagged."""
    script = (
        "import modal; app = modal.App.lookup('mngr-cloud', create_if_missing=True); "
        f"modal.Sandbox.create('sleep', 'infinity', app=app, name={name!r})"
    )
    env = {**os.environ, "MODAL_TOKEN_ID": TOKEN_ID, "MODAL_TOKEN_SECRET": TOKEN_SECRET}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)


def running(standin) -> list:
    return [box for box in standin.state.sandboxes.values() if not box.finished]


def test_a_failed_create_keeps_the_existing_host_of_its_name(cli, standin_settings, standin):
    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    standin.state.faults["SandboxCreateV2"] = (Status.NOT_FOUND, "Image typo:1 not found")
    failed = cli("host", "create", "web", "-p", "cloud", "--image", "typo:1")
    assert failed.exit_code == 3, failed.stderr
    assert [box.name for box in running(standin)] == ["web"]
    assert "SandboxTerminateV2" not in standin.state.calls


def test_a_failed_create_keeps_a_sandbox_mngr_never_made(cli, standin_settings, standin):
    sandbox_made_outside_mngr("web")
    # Fails before the name is checked: undone.
    standin.state.faults["SandboxCreateV2"] = (Status.INTERNAL, "internal error")
    failed = cli("host", "create", "web", "-p", "cloud")
    assert failed.exit_code == 1, failed.stderr
    assert "internal error" in failed.stderr and "could not undo" not in failed.stderr
    [undo] = [r for name, r in standin.state.requests if name == "SandboxListV2"][-1:]
    tags = {tag.tag_name: tag.tag_value for tag in undo.tags}
    assert tags["mngr-host-id"].startswith("host-")  # by host id, not name
    [stranger] = running(standin)
    assert (stranger.name, stranger.tags) == ("web", {})
