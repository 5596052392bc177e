"""The CLI a person meets (issue 17): nothing orphaned, names that resolve, answers that tell
the truth. Local provider only; each test in its own empty home."""

from __future__ import annotations

from pathlib import Path


def settings(home: Path) -> Path:
    return home / ".config" / "mngr" / "settings.toml"


def test_provider_remove_refuses_while_it_has_hosts(mngr, isolated_home: Path) -> None:
    assert mngr("provider", "add", "box", "--backend", "local").exit_code == 0
    assert mngr("host", "create", "a", "b", "-p", "box").exit_code == 0
    result = mngr("provider", "remove", "box", "--yes")
    assert result.exit_code != 0
    assert "has 2 host(s): a, b" in result.stderr and "--force" in result.stderr
    assert "box" in settings(isolated_home).read_text()
    assert mngr("host", "destroy", "a", "b", "--yes").exit_code == 0
    assert mngr("provider", "remove", "box", "--yes").exit_code == 0


def test_provider_remove_force_and_several_names(mngr, isolated_home: Path) -> None:
    for name in ("p1", "p2"):
        assert mngr("provider", "add", name, "--backend", "local").exit_code == 0
    assert mngr("host", "create", "kept", "-p", "p1").exit_code == 0
    assert mngr("provider", "remove", "p1", "p2", "--yes", "--force").exit_code == 0
    text = settings(isolated_home).read_text()
    assert "p1" not in text and "p2" not in text


def test_provider_add_refuses_what_would_break_every_command(mngr, isolated_home: Path) -> None:
    result = mngr("provider", "add", "local", "--backend", "docker")
    assert result.exit_code == 2
    assert "not changed" in result.stderr and "built-in provider" in result.stderr
    assert (
        not settings(isolated_home).exists() or "docker" not in settings(isolated_home).read_text()
    )
    assert mngr("provider", "list").exit_code == 0


def test_provider_add_refuses_a_second_provider_on_the_same_folder(
    mngr, isolated_home: Path, tmp_path: Path
) -> None:
    root = f"root={tmp_path / 'shared'}"
    assert mngr("provider", "add", "one", "--backend", "local", "--set", root).exit_code == 0
    result = mngr("provider", "add", "two", "--backend", "local", "--set", root)
    assert result.exit_code == 2 and "one place" in result.stderr
    assert "two" not in settings(isolated_home).read_text()
    assert mngr("provider", "list").exit_code == 0


def test_a_remote_exit_status_of_130_is_not_called_an_interruption(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    result = mngr("host", "exec", "h", "--", "sh", "-c", "exit 130")
    assert result.exit_code == 130 and "interrupted" not in result.stderr


def test_exec_without_double_dash_says_where_the_command_goes(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    result = mngr("host", "exec", "h", "ls", "-la")
    assert result.exit_code == 2 and "after '--'" in result.stderr


def test_snapshot_names_are_unique_per_host_and_ambiguity_lists_ids(mngr) -> None:
    assert mngr("host", "create", "a", "b").exit_code == 0
    first = mngr("host", "snapshot", "create", "a", "-n", "before", "-f", "json").json()
    again = mngr("host", "snapshot", "create", "a", "-n", "before")
    assert again.exit_code != 0 and "already has a snapshot named 'before'" in again.stderr
    assert first["snapshots"][0]["id"] in again.stderr
    second = mngr("host", "snapshot", "create", "b", "-n", "before", "-f", "json").json()
    result = mngr("host", "create", "c", "--from-snapshot", "before")
    assert result.exit_code == 2
    for snap in (first, second):
        assert snap["snapshots"][0]["id"] in result.stderr


def test_from_snapshot_finds_it_on_another_provider(mngr) -> None:
    assert mngr("provider", "add", "other", "--backend", "local").exit_code == 0
    assert mngr("host", "create", "src", "-p", "other").exit_code == 0
    assert mngr("host", "snapshot", "create", "src", "-n", "base").exit_code == 0
    result = mngr("host", "create", "copy", "--from-snapshot", "base", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["hosts"][0]["provider"] == "other"


def test_destroy_resolves_before_it_asks(mngr) -> None:
    result = mngr("host", "destroy", "nosuch")  # off a terminal, without --yes
    assert result.exit_code == 3 and "no host 'nosuch'" in result.stderr


def test_snapshot_list_of_a_host_that_does_not_exist_is_exit_3(mngr) -> None:
    result = mngr("host", "snapshot", "list", "nosuch")
    assert result.exit_code == 3 and "no host 'nosuch'" in result.stderr


def test_host_show_aliases_quiet_create_and_key_only_tag_filter(mngr) -> None:
    made = mngr("host", "create", "web", "-t", "team=a", "-q")
    assert made.exit_code == 0 and made.stdout.startswith("host-")
    assert mngr("host", "create", "db").exit_code == 0
    shown = mngr("host", "show", "web", "-f", "json").json()
    assert shown["host"]["id"] == made.stdout.strip() and shown["host"]["tags"] == {"team": "a"}
    table = mngr("host", "show", "web").stdout
    assert "tags:\n  team: a\n" in table
    assert mngr("host", "ls", "-q", "-t", "team").stdout == "web\n"
    assert mngr("host", "rm", "web", "db", "--yes").exit_code == 0
    assert mngr("host", "ls", "-q").stdout == ""


def test_stop_of_a_stopped_host_says_so_and_runs_nothing(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    assert mngr("host", "stop", "h").stderr == "stopped: h.local\n"
    again = mngr("host", "stop", "h")
    assert again.exit_code == 0 and again.stderr == "h.local: already stopped, nothing to do\n"
    assert mngr("host", "start", "h").exit_code == 0
    assert "already running" in mngr("host", "start", "h").stderr


def test_config_path_with_a_missing_mngr_config_is_an_error(
    mngr, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MNGR_CONFIG", str(tmp_path / "nonexistent.toml"))
    result = mngr("config", "path")
    assert result.exit_code == 2 and "nonexistent.toml: settings file not found" in result.stderr


def test_table_shows_ages_and_clips_and_wide_shows_everything(mngr) -> None:
    long_tag = "note=" + "x" * 60
    assert mngr("host", "create", "h", "-t", long_tag).exit_code == 0
    row = mngr("host", "list").stdout.splitlines()[1]
    assert "s ago" in row and "x" * 60 not in row and "…" in row
    assert len(row) <= 80
    wide = mngr("host", "list", "--wide").stdout.splitlines()[1]
    assert "x" * 60 in wide and "Z" in wide


def test_ages() -> None:
    from mngr.output import ago

    now = 1_000_000_000.0  # 2001-09-09T01:46:40Z
    assert ago("2001-09-09T01:46:10Z", now) == "30s ago"
    assert ago("2001-09-09T01:36:40Z", now) == "10m ago"
    assert ago("2001-09-08T01:46:40Z", now) == "24h ago"
    assert ago("2001-09-01T01:46:40Z", now) == "8d ago"
    assert ago("not a time", now) == "not a time" and ago(None, now) == ""


def test_timeout_bounds_a_provider_that_never_answers(mngr, isolated_home: Path) -> None:
    """A docker daemon address whose listener accepts and never answers (loopback only)."""
    import shutil
    import socket
    import time

    from tests.conftest import require

    require(shutil.which("docker") is not None, "docker CLI not installed")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        settings(isolated_home).parent.mkdir(parents=True, exist_ok=True)
        settings(isolated_home).write_text(
            f'[providers.mute]\nbackend = "docker"\nhost = "tcp://127.0.0.1:{port}"\n'
        )
        start = time.monotonic()
        result = mngr("--timeout", "1.5", "host", "list", "-p", "mute", "-p", "local")
        took = time.monotonic() - start
        assert result.exit_code == 6, result.stderr
        assert "did not answer within 1.5s" in result.stderr
        assert took < 10
        checked = mngr("--timeout", "1", "provider", "check", "mute", "local", "-f", "json")
        rows = {row["name"]: row for row in checked.json()["providers"]}
        assert rows["local"]["ok"] and rows["local"]["ms"] >= 0
        assert not rows["mute"]["ok"] and "within 1s" in rows["mute"]["details"]["error"]
    finally:
        silent.close()


def test_waiting_line_names_the_providers_and_clears(capsys) -> None:
    from mngr.output import waiting_line

    waiting_line(["aws"], 0.5)
    assert capsys.readouterr().err == ""
    waiting_line(["aws", "docker"], 2.2)
    assert capsys.readouterr().err == "\r\033[Kwaiting for aws, docker (2s)"
    waiting_line([], 3.0)
    assert capsys.readouterr().err == "\r\033[K"


def test_a_deleted_snapshot_is_not_in_its_hosts_record(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    made = mngr("host", "snapshot", "create", "h", "-n", "one", "-f", "json").json()
    snap_id = made["snapshots"][0]["id"]
    [host] = mngr("host", "list", "-f", "json").json()["hosts"]
    assert host["snapshots"] == [snap_id]
    assert mngr("host", "snapshot", "delete", snap_id, "--yes").exit_code == 0
    [host] = mngr("host", "list", "-f", "json").json()["hosts"]
    assert host["snapshots"] == []


def test_config_show_prints_one_setting_a_line(mngr) -> None:
    shown = mngr("config", "show").stdout
    assert "\nlocal (local):\n" in shown
    assert "\n  timeout_s: 60.0\n" in shown and "\n  enabled: yes\n" in shown


def test_logs_show_what_detached_commands_printed(mngr) -> None:
    import subprocess
    import sys
    import time

    def logs(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mngr", "host", "logs", "h", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    assert mngr("host", "create", "h").exit_code == 0
    empty = logs()
    assert empty.returncode == 0 and "no output of detached commands yet" in empty.stderr
    script = "echo started; echo oops >&2"
    assert mngr("host", "exec", "h", "-d", "--", "sh", "-c", script).exit_code == 0
    deadline = time.monotonic() + 10
    out = ""
    while "oops" not in out and time.monotonic() < deadline:
        done = logs("-n", "5")
        assert done.returncode == 0, done.stderr
        out = done.stdout
        time.sleep(0.1)
    assert out.splitlines()[-2:] == ["started", "oops"]
