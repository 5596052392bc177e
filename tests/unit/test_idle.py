"""Idle stop, the parts owned by core: durations, the watcher's arguments, and the refusal of
backends that cannot stop a host when it is idle (before anything runs)."""

from __future__ import annotations

import subprocess

import pytest
from mngr_backends.docker import DockerConfig, DockerCreateOptions, DockerSpec

from mngr import idle, resources
from mngr.backend import CreateRequest
from mngr.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("0", 0),
                          ("0m", 0), (0, 0)],
)  # fmt: skip
def test_idle_timeouts_read_as_seconds(text, seconds) -> None:
    assert resources.parse_idle_timeout(text) == seconds


@pytest.mark.parametrize("value", ["30", "1800", 1800, "2 hours", "-5m", "1.5h", True, ""])
def test_an_idle_timeout_needs_a_unit(value) -> None:
    with pytest.raises(UsageError, match="idle timeout"):
        resources.parse_idle_timeout(value)


@pytest.mark.parametrize(("seconds", "text"), [(90, "90s"), (1800, "30m"), (7200, "2h"),
                                               (5400, "90m"), (86400, "1d")])  # fmt: skip
def test_durations_print_in_their_largest_unit(seconds, text) -> None:
    assert resources.duration_text(seconds) == text


def test_the_watcher_polls_a_tenth_of_the_timeout_or_as_tests_ask(monkeypatch) -> None:
    monkeypatch.delenv(idle.POLL_ENV, raising=False)
    assert [idle.poll_s(t) for t in (4, 300, 1800, 86400)] == [1, 30, 60, 60]
    monkeypatch.setenv(idle.POLL_ENV, "2")
    assert idle.poll_s(1800) == 2


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_the_watcher_and_the_boot_script_are_posix_sh(shell) -> None:
    argv = [shell, "sh"] if shell == "busybox" else [shell]
    for script in (idle.WATCHER, idle.boot_script(60)):
        assert subprocess.run([*argv, "-n", "-c", script]).returncode == 0


def test_a_docker_host_with_a_timeout_runs_the_watcher_not_sleep() -> None:
    spec = DockerSpec(DockerConfig(name="d", backend="docker"))
    request = CreateRequest("web", "host-" + "0" * 32, "2026-01-01T00:00:00Z", idle_timeout_s=90)
    argv = spec.run_argv(request, "img", DockerCreateOptions())
    tail = argv[argv.index("--entrypoint") :]
    assert tail[:5] == ["--entrypoint", "sh", "img", "-c", idle.WATCHER]
    assert tail[5:] == ["mngr-idle", "90", "9", "0", "true"]
    assert "mngr.idle-timeout=90" in argv
    assert argv[argv.index("--health-cmd") + 1] == idle.READ_LAST_ACTIVITY
    plain = spec.run_argv(
        CreateRequest("web", "host-" + "0" * 32, "2026-01-01T00:00:00Z"),
        "img",
        DockerCreateOptions(),
    )
    assert plain[-3:] == ["sleep", "img", "infinity"] and "--health-cmd" not in plain


def test_a_backend_that_cannot_says_why_before_anything_runs(mngr, service) -> None:
    refused = mngr("host", "create", "web", "-p", "local", "--idle-timeout", "30m")
    assert refused.exit_code == 2
    assert "backend 'local' cannot stop a host when it is idle: a local host is a folder" in (
        refused.stderr
    )
    assert service().list_hosts(["local"]).hosts == []
    bad = mngr("host", "create", "web", "-p", "local", "--idle-timeout", "30")
    assert bad.exit_code == 2 and "invalid idle timeout '30'" in bad.stderr
    assert mngr("host", "create", "web", "-p", "local", "--idle-timeout", "0").exit_code == 0


def test_the_provider_setting_is_refused_without_a_unit(user_settings, mngr) -> None:
    user_settings.write_text('[providers.dk]\nbackend = "docker"\nidle_timeout = 1800\n')
    result = mngr("provider", "list")
    assert result.exit_code == 2
    assert "settings.toml:3: provider 'dk': idle_timeout: invalid idle timeout 1800" in (
        result.stderr
    )
