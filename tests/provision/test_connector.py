"""mngr's pyinfra connector driven through pyinfra's own API and CLI: a binary file goes up and
comes back unchanged (docker, ssh pool, local), commands run with pyinfra's arguments, and a
stopped or unknown host is a connect error in mngr's words."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provision.conftest import on_host


def connected(ref: str):  # noqa: ANN201 - a pyinfra Host
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all

    inventory = Inventory(([f"@mngr/{ref}"], {}))
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host(f"@mngr/{ref}")
    assert host.connected, f"@mngr/{ref} did not connect"
    return host


def round_trip(ref: str, remote: str) -> None:
    host = connected(ref)
    blob = bytes(range(256)) * 64 + os.urandom(1 << 20) + b"\r\n\x00no newline at the end"
    assert host.put_file(io.BytesIO(blob), remote)
    back = io.BytesIO()
    assert host.get_file(remote, back)
    assert back.getvalue() == blob
    # Nothing left beside the file (the upload's temporary name is gone).
    folder = os.path.dirname(remote) or "."
    assert on_host(ref, "ls", "-a", folder).split() == [".", "..", os.path.basename(remote)]
    ok, output = host.run_shell_command("cat; echo $X", _stdin="in\n", _env={"X": "it's"})
    assert ok and output.stdout_lines == ["in", "it's"]
    ok, output = host.run_shell_command("echo to-stderr >&2; exit 3", _success_exit_codes=[3])
    assert ok and output.stderr_lines == ["to-stderr"]
    assert not host.run_shell_command("exit 1")[0]
    with pytest.raises(OSError, match="(?i)no such file|nonexistent"):
        host.put_file(io.BytesIO(b"x"), "no/such/folder/file")
    with pytest.raises(OSError):
        host.get_file("no/such/file", io.BytesIO())


@pytest.mark.docker
def test_put_and_get_file_keep_a_binary_file_on_docker(docker_engine, add_docker, mngr) -> None:  # noqa: ANN001
    dk = add_docker(docker_engine)
    assert mngr("host", "create", "box", "-p", dk, "-q").exit_code == 0
    on_host(f"box.{dk}", "mkdir", "/up")
    round_trip(f"box.{dk}", "/up/blob.bin")


@pytest.mark.sshd
def test_put_and_get_file_keep_a_binary_file_on_an_ssh_pool(sshd_pool, mngr) -> None:  # noqa: ANN001
    sshd_pool(1)
    assert mngr("host", "create", "h", "-p", "pool", "-q").exit_code == 0
    on_host("h.pool", "mkdir", "up")
    round_trip("h.pool", "up/blob.bin")


def test_put_and_get_file_keep_a_binary_file_on_a_local_host(mngr) -> None:  # noqa: ANN001
    assert mngr("host", "create", "here", "-p", "local", "-q").exit_code == 0
    on_host("here", "mkdir", "up")
    round_trip("here.local", "up/blob.bin")


def test_pyinfra_cli_runs_exec_and_facts_on_a_mngr_host(mngr) -> None:  # noqa: ANN001
    assert mngr("host", "create", "web-1", "-p", "local", "-q").exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "pyinfra", "@mngr/web-1", "exec", "--", "pwd"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "/web-1" in done.stdout + done.stderr  # the host's own folder
    fact = subprocess.run(
        [sys.executable, "-m", "pyinfra", "@mngr/web-1", "fact", "server.Arch", "--json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert fact.returncode == 0, fact.stderr
    assert os.uname().machine in fact.stdout


def test_a_stopped_or_unknown_host_is_a_connect_error_in_mngr_words(mngr) -> None:  # noqa: ANN001
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.exceptions import ConnectError

    assert mngr("host", "create", "zzz", "-p", "local", "-q").exit_code == 0
    assert mngr("host", "stop", "zzz").exit_code == 0
    for ref, why in (("zzz", "is stopped; start it first"), ("nope", "no host 'nope'")):
        inventory = Inventory(([f"@mngr/{ref}"], {}))
        State(inventory, Config())
        host = inventory.get_host(f"@mngr/{ref}")
        with pytest.raises(ConnectError, match=f"^mngr: .*{why}"):
            host.connect(raise_exceptions=True, show_errors=False)


def test_at_mngr_alone_is_every_running_host_grouped_by_provider_and_tag(mngr) -> None:  # noqa: ANN001
    from mngr.pyinfra_connector import MngrConnector

    for name, tag in (("a", "role=web"), ("b", "role=db"), ("c", "role=web")):
        assert mngr("host", "create", name, "-p", "local", "-t", tag, "-q").exit_code == 0
    assert mngr("host", "stop", "c").exit_code == 0
    found = {name: groups for name, _, groups in MngrConnector.make_names_data(None)}
    assert found == {
        "@mngr/a.local": ["@mngr", "provider_local", "tag_role_web"],
        "@mngr/b.local": ["@mngr", "provider_local", "tag_role_db"],
    }


def test_mngr_cli_does_not_import_pyinfra() -> None:
    code = (
        "import sys, mngr.cli, mngr.service, mngr.provision, mngr.inventory; "
        "sys.exit('pyinfra' in sys.modules or 'gevent' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_without_pyinfra_the_commands_say_how_to_install_it(
    mngr,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setitem(sys.modules, "pyinfra", None)  # `import pyinfra` now fails
    Path("deploy.py").write_text("")
    for args in (
        ("host", "provision", "web-1", "deploy.py"),
        ("host", "create", "web-1", "-p", "local", "--provision", "deploy.py"),
    ):
        result = mngr(*args)
        assert result.exit_code == 4, result.stderr
        assert "pip install 'mngr[provision]'" in result.stderr
    assert mngr("host", "list", "-q").stdout == ""  # create made nothing
