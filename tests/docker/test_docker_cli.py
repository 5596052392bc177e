"""CLI tests of the docker backend with pytest-subprocess: exit codes, JSON shape, messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from mngr_backends.docker import DockerConfig, DockerSpec

from mngr.backend import shell_exec
from tests.docker.conftest import captured_errors, fixture_text

SOCK = "unix:///run/mngr-test/docker.sock"
SPEC = DockerSpec(DockerConfig(name="dk", backend="docker", host=SOCK))
WEB = "web.dk"


@pytest.fixture(autouse=True)
def docker_provider(user_settings: Path) -> None:
    user_settings.write_text(f'[providers.dk]\nbackend = "docker"\nhost = "{SOCK}"\n')


def daemon_says(fp, case: str, argv: list[str] | None = None, occurrences: int = 1) -> None:
    error = captured_errors(case)[0]
    fp.register(
        argv or SPEC.ps_argv(),
        returncode=error["returncode"],
        stderr=error["stderr"],
        occurrences=occurrences,
    )


def hosts_listed(fp) -> None:
    """The daemon holds the captured hosts (web running, db stopped, ...)."""
    fp.register(SPEC.ps_argv(), stdout=fixture_text("ps.jsonl"))


def test_list_shows_the_hosts_with_their_tags(fp, mngr) -> None:
    hosts_listed(fp)
    result = mngr("host", "list", "--provider", "dk", "--format", "json")
    assert result.exit_code == 0
    doc = result.json()
    web = next(h for h in doc["hosts"] if h["name"] == "web")
    assert web["tags"] == {"team": "a,b=c d", "owner": "zoë ☃", "empty": ""}
    assert web["provider"] == "dk" and web["backend"] == "docker" and web["state"] == "running"
    assert "handle" not in web


def test_daemon_down_is_an_error_row_and_the_other_providers_still_list(fp, mngr) -> None:
    assert mngr("host", "create", "here").exit_code == 0  # on `local`
    daemon_says(fp, "daemon_down")
    result = mngr("host", "list", "--format", "json")
    assert result.exit_code == 6
    doc = result.json()
    assert [h["name"] for h in doc["hosts"]] == ["here"]
    [row] = doc["errors"]
    assert row["provider"] == "dk" and row["kind"] == "unreachable"
    assert "Is the docker daemon running?" in row["message"]


def test_daemon_down_in_a_table_is_said_on_stderr(fp, mngr) -> None:
    daemon_says(fp, "daemon_down")
    result = mngr("host", "list", "--provider", "dk")
    assert result.exit_code == 6
    assert "error: provider dk: cannot reach the Docker daemon" in result.stderr
    assert "no hosts" not in result.stderr


def test_daemon_down_fails_other_verbs_with_exit_1(fp, mngr) -> None:
    daemon_says(fp, "daemon_down")
    result = mngr("host", "stop", "web", "--provider", "dk")
    assert result.exit_code == 1 and "cannot tell whether host 'web' exists" in result.stderr


def test_permission_denied_is_exit_5(fp, mngr) -> None:
    daemon_says(fp, "permission_denied", occurrences=2)
    assert mngr("host", "list", "--provider", "dk").exit_code == 6
    result = mngr("host", "stop", "web", "--provider", "dk")
    assert result.exit_code == 5 and "docker' group" in result.stderr


def test_permission_denied_on_create_is_exit_5(fp, mngr) -> None:
    fp.register([SPEC.base[0], "--host", SOCK, "run", fp.any()], returncode=1, stderr=(
        captured_errors("permission_denied")[0]["stderr"]
    ))  # fmt: skip
    fp.register(SPEC.rm_argv("x.dk", force=True), returncode=1, stderr="permission denied ...")
    result = mngr("host", "create", "x", "--provider", "dk")
    assert result.exit_code == 5


def test_a_missing_image_is_exit_3_with_a_clear_message(fp, mngr) -> None:
    case = captured_errors("image_missing")[0]
    fp.register([*SPEC.base, "run", fp.any()], returncode=125, stderr=case["stderr"])
    fp.register(SPEC.rm_argv("x.dk", force=True))
    result = mngr("host", "create", "x", "--provider", "dk", "--image", "no-such-image:1")
    assert result.exit_code == 3
    assert "image 'no-such-image:1' is not on the Docker host and could not be pulled" in (
        result.stderr
    )


def test_a_name_taken_is_exit_1_and_says_the_host_exists(fp, mngr) -> None:
    case = captured_errors("name_conflict")[0]
    fp.register([*SPEC.base, "run", fp.any()], returncode=125, stderr=case["stderr"])
    result = mngr("host", "create", "busy", "--provider", "dk")
    assert result.exit_code == 1
    assert "host 'busy' already exists in provider 'dk'" in result.stderr
    assert len(fp.calls) == 1


def test_destroy_of_a_missing_host_is_not_an_error_with_missing_ok(fp, mngr) -> None:
    fp.register(SPEC.ps_argv(), stdout="")
    result = mngr("host", "destroy", "ghost", "--provider", "dk", "--yes", "--missing-ok")
    assert result.exit_code == 0 and "no such host" in result.stderr


def test_destroy_of_a_running_host_stops_it_first_as_everywhere(fp, mngr) -> None:
    hosts_listed(fp)
    fp.register(SPEC.stop_argv(fixture_id("web")))
    fp.register(SPEC.rm_argv(fixture_id("web"), force=False))
    result = mngr("host", "destroy", "web", "--provider", "dk", "--yes")
    assert result.exit_code == 0, result.stderr
    assert fp.call_count(SPEC.stop_argv(fixture_id("web"))) == 1


def test_a_host_started_under_destroy_says_how_to_go_on(fp, mngr) -> None:
    hosts_listed(fp)
    fp.register(SPEC.stop_argv(fixture_id("web")))
    daemon_says(fp, "rm_running", argv=SPEC.rm_argv(fixture_id("web"), force=False))
    result = mngr("host", "destroy", "web", "--provider", "dk", "--yes")
    assert result.exit_code == 1 and "stop it first, or pass --force" in result.stderr


def test_a_container_gone_under_a_verb_is_exit_3(fp, mngr) -> None:
    hosts_listed(fp)
    daemon_says(fp, "stop_missing", argv=SPEC.stop_argv(fixture_id("web")))
    assert mngr("host", "stop", "web", "--provider", "dk").exit_code == 3


def fixture_id(name: str) -> str:
    hosts = SPEC.parse_hosts(fixture_text("ps.jsonl"))
    return next(str(h.handle) for h in hosts if h.name == name)


def test_exec_passes_the_exit_code_through_without_a_tty(fp, mngr) -> None:
    hosts_listed(fp)
    command = shell_exec(["sh", "-c", "exit 3"])  # 127 / 126 as a shell says them
    argv = SPEC.exec_argv(fixture_id("web"), command, tty=False, detach=False)
    assert "--tty" not in argv
    # Without a terminal the exec carries a fresh marker (MNGR_EXEC=...) for Ctrl-C.
    at = argv.index("--interactive") + 1
    fp.register([*argv[:at], "--env", fp.any(min=1, max=1), *argv[at:]], returncode=3)
    assert (
        mngr("host", "exec", "web", "--provider", "dk", "--", "sh", "-c", "exit 3").exit_code == 3
    )


def test_exec_on_a_stopped_host_says_to_start_it(fp, mngr) -> None:
    hosts_listed(fp)
    result = mngr("host", "exec", "db", "--provider", "dk", "--", "true")
    assert result.exit_code == 1 and "start it first: mngr host start db.dk" in result.stderr
    assert not any("exec" in call for call in fp.calls)


def test_dry_run_prints_the_build_and_run_and_runs_nothing(fp, mngr, tmp_path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    result = mngr(
        "host", "create", "web", "--provider", "dk", "--build", str(tmp_path),
        "-b", "V=1", "-s", "--shm-size=1g", "--env", "TOKEN=s3cr3t", "--tag", "team=a b",
        "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0
    build, run = result.stdout.splitlines()
    assert build.startswith(f"docker --host {SOCK} build --force-rm --tag mngr-build:host-")
    assert build.endswith(f"--build-arg V=1 {tmp_path}")
    assert "--label 'mngr.tag.team=a b'" in run and "--shm-size=1g" in run
    assert "--env-file /dev/stdin" in run and "s3cr3t" not in result.stdout
    assert not fp.calls


def test_a_docker_flag_on_another_backend_is_refused(mngr) -> None:
    result = mngr("host", "create", "x", "--provider", "local", "--cpus", "2")
    assert result.exit_code == 2
    assert "--cpus is not supported by backend 'local'" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--memory", "lots"], "--memory 'lots': expected a size"),
        (["--memory", "2"], "--memory 2: give a unit"),
        (["--env", "NOVALUE"], "--env: "),
        (["--cpus", "many"], "--cpus 'many': expected a number"),
    ],
)
def test_bad_docker_flag_values_are_usage_errors(mngr, flags: list[str], message: str) -> None:
    result = mngr("host", "create", "x", "--provider", "dk", *flags)
    assert result.exit_code == 2 and message in result.stderr


def test_provider_check_reports_the_server_in_one_call(fp, mngr) -> None:
    fp.register(SPEC.version_argv(), stdout=fixture_text("version.json"))
    result = mngr("provider", "check", "dk", "--format", "json")
    assert result.exit_code == 0
    [row] = result.json()["providers"]
    assert row["ok"] is True and row["details"]["server_version"]
    assert len(fp.calls) == 1


def test_provider_check_of_a_stopped_daemon_fails(fp, mngr) -> None:
    daemon_says(fp, "daemon_down", argv=SPEC.version_argv())
    result = mngr("provider", "check", "dk")
    assert (
        result.exit_code == 1 and "Is the docker daemon running?" in result.stdout + result.stderr
    )


def test_bad_provider_settings_name_the_file_and_key(mngr, user_settings: Path) -> None:
    user_settings.write_text('[providers.dk]\nbackend = "docker"\nhost = "http://box"\n')
    result = mngr("host", "list")
    assert result.exit_code == 2
    assert f"{user_settings}:3" in result.stderr and "host must start with one of" in result.stderr
