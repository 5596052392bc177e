"""A failed Modal create undoes only what it made: the undo terminates sandboxes tagged with
this create's host id, never one found by name (the SDK double, through the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.modal.conftest import TOKEN_ID, TOKEN_SECRET


def sandbox_made_outside_mngr(name: str) -> None:
    """A sandbox of the provider's app with the host's name, made with the SDK, untagged."""
    script = (
        "import modal; app = modal.App.lookup('mngr-cloud', create_if_missing=True); "
        f"modal.Sandbox.create('sleep', 'infinity', app=app, name={name!r})"
    )
    env = {**os.environ, "MODAL_TOKEN_ID": TOKEN_ID, "MODAL_TOKEN_SECRET": TOKEN_SECRET}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)


def running_names(fake_modal) -> list[str]:
    return sorted(box["name"] for box in fake_modal.sandboxes(running=True))


def test_a_failed_create_keeps_the_existing_host_of_its_name(cli, modal_settings, fake_modal):
    assert cli("host", "create", "web", "-p", "cloud").exit_code == 0
    fake_modal.fault("Sandbox.create:notfound")
    failed = cli("host", "create", "web", "-p", "cloud", "--image", "typo:1")
    assert failed.exit_code == 3, failed.stderr
    assert running_names(fake_modal) == ["web"]
    assert not [c for c in fake_modal.calls() if c["op"] == "Sandbox.terminate"]


def test_a_failed_create_keeps_a_sandbox_mngr_never_made(cli, modal_settings, fake_modal):
    sandbox_made_outside_mngr("web")
    fake_modal.fault("Sandbox.create:error")  # fails before the name is checked: undone
    failed = cli("host", "create", "web", "-p", "cloud")
    assert failed.exit_code == 1, failed.stderr
    assert "internal error" in failed.stderr and "could not undo" not in failed.stderr
    [undo] = [c for c in fake_modal.calls() if c["op"] == "Sandbox.list"][-1:]
    assert undo["args"]["tags"]["mngr-host-id"].startswith("host-")  # by host id, not name
    assert running_names(fake_modal) == ["web"]
    [stranger] = fake_modal.sandboxes(running=True)
    assert stranger["tags"] == {}
