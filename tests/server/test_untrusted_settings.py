"""A project settings file (found by walking up from the working directory: a cloned
repository) may not redirect the user's token until the user trusts it, and a password
written into a URL never reaches a message, a log or a server answer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import RW_TOKEN, hosts_of

pytestmark = pytest.mark.server


class Recorder:
    """A loopback listener that only notes who connected (standing in for a stranger's server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.received = b""
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    self.received += conn.recv(65536)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    listener = Recorder()
    yield listener
    listener.close()


@pytest.fixture
def repo(isolated_home: Path) -> Path:
    """A cloned repository as the working directory (the tests' cwd is its subfolder)."""
    root = Path.cwd()
    (root / ".mngr").mkdir()
    sub = root / "src"
    sub.mkdir()
    return root


def test_a_cloned_repository_cannot_send_the_users_token_elsewhere(
    team, mngr, repo: Path, recorder: Recorder, monkeypatch
) -> None:
    project = repo / ".mngr" / "settings.toml"
    project.write_text(f'[providers.team]\nurl = "{recorder.url}"\n')
    monkeypatch.chdir(repo / "src")
    for args in (("host", "list"), ("host", "create", "web", "-p", "team"), ("provider", "list")):
        result = mngr(*args)
        assert result.exit_code == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert f"{project}:2: provider 'team': 'url' may only be set by a settings file" in line
        assert f"run `mngr config trust {project}`" in line
    assert recorder.connections == 0 and RW_TOKEN.encode() not in recorder.received
    assert not (team.data_dir / "web").exists()
    # `config show` only shows: the user can read what the file would do before trusting it.
    shown = mngr("config", "show", "--format", "json")
    assert shown.exit_code == 0 and recorder.url in shown.stdout
    assert "untrusted" in mngr("config", "path").stdout

    assert mngr("config", "trust").exit_code == 0
    assert "trusted" in mngr("config", "path").stdout
    assert mngr("host", "list", "-p", "team").exit_code == 6  # trusted: it is obeyed
    assert recorder.connections >= 1

    project.write_text(f'[providers.team]\nurl = "{recorder.url}"\ntimeout_s = 5\n')
    changed = mngr("host", "list", "-p", "team")
    assert changed.exit_code == 2 and "mngr config trust" in changed.stderr  # trust again
    assert mngr("config", "untrust", str(project)).exit_code == 0


def test_an_untrusted_project_may_still_set_harmless_keys(team, mngr, repo: Path) -> None:
    (repo / ".mngr" / "settings.toml").write_text("[providers.team]\ntimeout_s = 7\n")
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 0 and doc["errors"] == []


def test_the_users_own_higher_layer_overrides_an_untrusted_key(
    team, mngr, repo: Path, recorder: Recorder, tmp_path: Path, monkeypatch
) -> None:
    (repo / ".mngr" / "settings.local.toml").write_text(
        f'[providers.team]\nurl = "{recorder.url}"\n'
    )
    mine = tmp_path / "mine.toml"
    mine.write_text(f'[providers.team]\nurl = "{team.url}"\n')
    result = mngr("--config", str(mine), "host", "list", "-p", "team", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert recorder.connections == 0


def test_a_password_in_a_url_setting_is_refused_and_never_echoed(mngr, user_settings) -> None:
    user_settings.write_text(
        '[providers.box]\nbackend = "docker"\nhost = "tcp://admin:S3c/r@t@127.0.0.1:9"\n'
    )
    for args in (("host", "list"), ("config", "show"), ("provider", "show", "box")):
        result = mngr(*args)
        assert result.exit_code == 2
        assert f"{user_settings}:3: provider 'box': 'host' holds a password" in result.stderr
        assert "S3c" not in result.stdout + result.stderr


def test_a_password_from_the_environment_never_reaches_an_error_row(
    serve, monkeypatch, tmp_path: Path
) -> None:
    """The server's own docker provider fails on DOCKER_HOST=tcp://user:PASS@...; the row a
    client gets, and the server's log, name the daemon without the password."""
    import shutil

    from tests.conftest import require

    require(shutil.which("docker") is not None, "the docker CLI (Debian package docker.io)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://admin:S3c/ret@127.0.0.1:{port}")
    server = serve("--provider", "local_docker", settings="")
    answer = server.api("GET", "/v1/hosts")
    assert answer.status == 200
    [row] = answer.body["errors"]
    assert "DOCKER_HOST holds a password" in row["message"] and "S3c" not in row["message"]
    assert "S3c" not in server.log()
