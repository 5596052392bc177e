"""Integration: the docker backend against a real Docker engine (and a real sshd for the ssh
transport), all started by the suite itself when none is running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.docker import dockerd
from tests.docker.conftest import DockerEnv

pytestmark = pytest.mark.docker


def listed(mngr, *args: str) -> dict:
    result = mngr("host", "list", "--format", "json", *args)
    assert result.exit_code in (0, 6), result.stderr
    return result.json()


def by_name(doc: dict) -> dict[str, dict]:
    return {h["name"]: h for h in doc["hosts"]}


def wait_until(check, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_lifecycle_of_four_hosts_leaves_no_container_or_image(docker_env: DockerEnv, mngr):
    p = docker_env.provider
    tag = "team=a,b=c d é"
    created = mngr(
        "--jobs", "3", "host", "create", "h1", "h2", "h3", "--provider", p, "--tag", tag,
        "--env", "GREETING=hello, world", "--format", "json",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    hosts = by_name(listed(mngr, "--provider", p))
    assert sorted(hosts) == ["h1", "h2", "h3"]
    assert {h["state"] for h in hosts.values()} == {"running"}
    assert {json.dumps(h["tags"]) for h in hosts.values()} == {json.dumps({"team": "a,b=c d é"})}

    for name in ("h1", "h2", "h3"):
        cmd = f'test "$GREETING" = "hello, world" && test "$(hostname)" = {name} && exit 7'
        assert mngr("host", "exec", name, "--provider", p, "--", "sh", "-c", cmd).exit_code == 7
    marker = "echo kept > /marker"
    assert mngr("host", "exec", "h1", "--provider", p, "--", "sh", "-c", marker).exit_code == 0

    assert mngr("host", "stop", "h1", "h2", "h3", "--provider", p).exit_code == 0
    assert {h["state"] for h in listed(mngr, "--provider", p)["hosts"]} == {"stopped"}
    assert mngr("host", "exec", "h2", "--provider", p, "--", "true").exit_code == 1
    assert mngr("host", "start", "h1", "h2", "h3", "--provider", p).exit_code == 0
    assert {h["state"] for h in listed(mngr, "--provider", p)["hosts"]} == {"running"}

    snap = mngr("host", "snapshot", "create", "h1", "--provider", p, "--name", "base", "-f", "json")
    assert snap.exit_code == 0, snap.stderr
    snaps = mngr("host", "snapshot", "list", "--provider", p, "--format", "json").json()
    assert [(s["name"], s["host"]) for s in snaps["snapshots"]] == [("base", "h1")]

    made = mngr("host", "create", "h4", "--provider", p, "--from-snapshot", "base")
    assert made.exit_code == 0, made.stderr
    kept = mngr("host", "exec", "h4", "--provider", p, "--", "grep", "-q", "kept", "/marker")
    assert kept.exit_code == 0
    h4 = by_name(listed(mngr, "--provider", p))["h4"]
    assert h4["tags"] == {} and h4["image"].startswith("mngr-snapshot:snap-")
    assert h4["id"] != by_name(listed(mngr, "--provider", p))["h1"]["id"]

    assert mngr("host", "destroy", "h4", "--provider", p, "--yes", "--force").exit_code == 0
    gone = mngr("host", "destroy", "h1", "h2", "h3", "--provider", p, "--yes", "--force", "--purge")
    assert gone.exit_code == 0, gone.stderr
    assert listed(mngr, "--provider", p)["hosts"] == []
    assert docker_env.labelled("ps") == [] and docker_env.labelled("image ls") == []


def test_destroy_keeps_snapshots_unless_purged_and_is_idempotent(docker_env: DockerEnv, mngr):
    p = docker_env.provider
    assert mngr("host", "create", "keep", "--provider", p).exit_code == 0
    assert mngr("host", "stop", "keep", "--provider", p, "--snapshot").exit_code == 0
    assert mngr("host", "destroy", "keep", "--provider", p, "--yes").exit_code == 0  # stopped
    [snap] = mngr("host", "snapshot", "list", "keep", "--provider", p, "-f", "json").json()[
        "snapshots"
    ]
    assert snap["name"].startswith("keep-stop-")
    again = mngr("host", "destroy", "keep", "--provider", p, "--yes", "--missing-ok")
    assert again.exit_code == 0 and "no such host" in again.stderr
    assert mngr("host", "snapshot", "delete", snap["id"], "--yes").exit_code == 0
    assert docker_env.labelled("image ls") == []


def test_build_args_env_and_start_args_reach_docker(docker_env: DockerEnv, mngr, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        f"FROM {dockerd.TEST_IMAGE}\nARG FLAVOUR=plain\nRUN echo $FLAVOUR > /flavour\n"
    )
    p = docker_env.provider
    made = mngr(
        "host", "create", "built", "--provider", p, "--build", str(tmp_path),
        "-b", "FLAVOUR=spicy", "-b", "--no-cache", "-s", "--label=extra=yes",
        "--env", "TOKEN=s3cr3t with spaces", "--memory", "64m", "--cpus", "0.5",
    )  # fmt: skip
    assert made.exit_code == 0, made.stderr
    check = 'test "$(cat /flavour)" = spicy && test "$TOKEN" = "s3cr3t with spaces"'
    assert mngr("host", "exec", "built", "--provider", p, "--", "sh", "-c", check).exit_code == 0
    host = by_name(listed(mngr, "--provider", p))["built"]
    assert host["resources"]["memory_gb"] == 64 / 1024 and host["resources"]["cpus"] == 0.5
    labels = docker_env.engine.docker(
        "inspect", "--format", "{{json .Config.Labels}}", "built." + p
    )
    assert json.loads(labels.stdout)["extra"] == "yes"
    assert mngr("host", "destroy", "built", "--provider", p, "--yes", "--force").exit_code == 0
    assert docker_env.labelled("image ls") == []  # the built image went with its host


def test_two_concurrent_creates_of_one_name_give_one_host(docker_env: DockerEnv, mngr_process):
    p = docker_env.provider
    procs = [mngr_process("host", "create", "race", "--provider", p) for _ in range(2)]
    results = [(proc.wait(60), proc.stderr.read()) for proc in procs]
    assert sorted(code for code, _ in results) == [0, 1]
    assert any(f"host 'race' already exists in provider '{p}'" in err for _, err in results)
    assert len(docker_env.labelled("ps")) == 1


def test_sigint_during_create_leaves_nothing(docker_env: DockerEnv, mngr_process, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {dockerd.TEST_IMAGE}\nRUN sleep 30\n")
    engine = docker_env.engine
    before = set(engine.docker("ps", "-aq").stdout.split())
    proc = mngr_process(
        "host", "create", "slow", "--provider", docker_env.provider, "--build", str(tmp_path)
    )
    # Interrupt once the build's RUN step is under way (a new container appears).
    assert wait_until(lambda: set(engine.docker("ps", "-aq").stdout.split()) - before)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert wait_until(lambda: set(engine.docker("ps", "-aq").stdout.split()) <= before)
    assert docker_env.labelled("ps") == [] and docker_env.labelled("image ls") == []


def test_stopped_daemon_is_an_error_row_never_an_empty_list(docker_env: DockerEnv, mngr, tmp_path):
    stale = socket.socket(socket.AF_UNIX)  # a socket left behind by a daemon that died
    stale.bind(str(tmp_path / "stale.sock"))
    gone = docker_env.add_provider("gone", host=f"unix://{tmp_path}/nothing.sock")
    stale_one = docker_env.add_provider("stale", host=f"unix://{tmp_path}/stale.sock")
    assert mngr("host", "create", "alive", "--provider", "local").exit_code == 0
    result = mngr("host", "list", "--format", "json")
    stale.close()
    assert result.exit_code == 6
    doc = result.json()
    assert "alive" in by_name(doc)
    rows = {(e["provider"], e["kind"]) for e in doc["errors"]}
    assert {(gone, "unreachable"), (stale_one, "unreachable")} <= rows
    assert mngr("host", "stop", "x", "--provider", gone).exit_code == 1


def test_provider_check_reports_the_server(docker_env: DockerEnv, mngr):
    result = mngr("provider", "check", docker_env.provider, "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = result.json()["providers"]
    assert row["details"]["reachable"] and row["details"]["server_version"]


def test_exec_and_shell_pass_stdin_through_and_detach_returns_at_once(docker_env: DockerEnv, mngr):
    p = docker_env.provider
    assert mngr("host", "create", "io", "--provider", p).exit_code == 0

    def attached(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "mngr", "host", *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)

    done = attached("exec", "io", "--provider", p, "--", "cat", stdin="through stdin\n")
    assert done.returncode == 0 and done.stdout == "through stdin\n"
    done = attached("shell", "io", "--provider", p, stdin="echo $((40 + 2)); exit 4\n")
    assert done.returncode == 4 and done.stdout == "42\n"
    start = time.monotonic()
    detached = mngr("host", "exec", "io", "--provider", p, "--detach", "--", "sleep", "30")
    assert detached.exit_code == 0 and time.monotonic() - start < 10
    ps = ["sh", "-c", '[ "$(pidof sleep | wc -w)" -eq 2 ]']  # the keep-alive and ours
    assert mngr("host", "exec", "io", "--provider", p, "--", *ps).exit_code == 0


def test_a_daemon_that_stops_is_an_error_row_not_an_empty_list(docker_env: DockerEnv, mngr):
    require(os.geteuid() == 0, "starting a second dockerd needs root")
    other = dockerd.start()
    try:
        other.build_test_image()
        stopping = docker_env.add_provider("other", host=other.host, image=dockerd.TEST_IMAGE)
        assert mngr("host", "create", "lonely", "--provider", stopping).exit_code == 0
        assert [h["name"] for h in listed(mngr, "--provider", stopping)["hosts"]] == ["lonely"]
    finally:
        other.stop()
    result = mngr("host", "list", "--provider", stopping, "--provider", docker_env.provider)
    assert result.exit_code == 6
    assert f"error: provider {stopping}: cannot reach the Docker daemon" in result.stderr
    destroyed = mngr("host", "destroy", "lonely", "--provider", stopping, "--yes")
    assert destroyed.exit_code == 1 and "cannot tell whether host 'lonely' exists" in (
        destroyed.stderr
    )


def test_the_builtin_local_docker_needs_no_settings(
    docker_env: DockerEnv, mngr, monkeypatch, user_settings: Path
):
    user_settings.write_text("")  # no providers configured: only the built-ins
    monkeypatch.delenv("MNGR_CONFIG")  # the suite disables local_docker unless asked for
    monkeypatch.setenv("DOCKER_HOST", docker_env.engine.host)
    name = f"builtin-{docker_env.provider}"
    try:
        made = mngr("host", "create", name, "--image", dockerd.TEST_IMAGE, "-p", "local_docker")
        assert made.exit_code == 0, made.stderr
        assert name in by_name(listed(mngr, "--provider", "local_docker"))
        assert mngr("host", "destroy", name, "--yes", "--force").exit_code == 0
    finally:  # this may be a developer's real daemon: remove only what this test made
        docker_env.engine.docker("rm", "--force", f"{name}.local_docker", check=False)


def test_remote_docker_over_ssh(docker_env: DockerEnv, docker_sshd, mngr, monkeypatch):
    monkeypatch.setenv("PATH", f"{docker_sshd.bin_dir}:{os.environ['PATH']}")  # our ssh keys
    remote = docker_env.add_provider("ssh", host=docker_sshd.url(), image=dockerd.TEST_IMAGE)
    check = mngr("provider", "check", remote, "--format", "json")
    assert check.exit_code == 0, check.stdout + check.stderr
    assert check.json()["providers"][0]["details"]["docker_host"] == docker_sshd.url()
    # The same host name in two provider instances on one daemon: each sees only its own.
    for provider in (remote, docker_env.provider):
        made = mngr("host", "create", "twin", "--provider", provider, "--tag", f"via={provider}")
        assert made.exit_code == 0, made.stderr
    hosts = listed(mngr, "--provider", remote)["hosts"]
    assert [(h["name"], h["tags"]) for h in hosts] == [("twin", {"via": remote})]
    ran = mngr("host", "exec", f"twin.{remote}", "--", "sh", "-c", "exit 5")
    assert ran.exit_code == 5
    assert mngr("host", "destroy", f"twin.{remote}", "--yes", "--force").exit_code == 0
    assert docker_env.labelled("ps", remote) == []
    assert len(docker_env.labelled("ps")) == 1


def test_concurrent_destroys_of_one_host_all_succeed(docker_env: DockerEnv, mngr):
    """What two `mngr serve` requests (or two terminals) destroying one host do: docker
    answers all but one 'removal already in progress', which is no failure."""
    import threading

    from mngr_backends.docker import DockerBackend, DockerConfig

    from mngr.plan import execute
    from mngr.runner import Runner

    assert mngr("host", "create", "web", "-p", docker_env.provider).exit_code == 0
    config = DockerConfig(name=docker_env.provider, backend="docker", host=docker_env.engine.host)
    backend = DockerBackend(config, Runner())
    [host] = backend.list_hosts()
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def destroy() -> None:
        start.wait()
        try:
            execute(backend.destroy_plan(host, force=True), backend)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=destroy) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert docker_env.labelled("ps") == []


def test_a_container_paused_behind_mngrs_back_starts_again(docker_env: DockerEnv, mngr):
    p = docker_env.provider
    assert mngr("host", "create", "nap", "-p", p).exit_code == 0
    docker_env.engine.docker("pause", f"nap.{p}")
    assert by_name(listed(mngr, "--provider", p))["nap"]["state"] == "stopped"
    started = mngr("host", "start", "nap", "-p", p)
    assert started.exit_code == 0, started.stderr
    assert by_name(listed(mngr, "--provider", p))["nap"]["state"] == "running"
    assert mngr("host", "destroy", "nap", "-p", p, "--yes", "--force").exit_code == 0


def test_memory_2g_is_two_gib_and_cpus_a_half_on_the_daemon(docker_env: DockerEnv, mngr):
    """`--memory 2g` means 2 GiB on every backend: docker gets bytes, never a bare `2`."""
    p = docker_env.provider
    limits = ("--memory", "2g", "--cpus", "0.5")
    dry = mngr("host", "create", "x", "-p", p, *limits, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "--cpus 0.5 --memory 2147483648b" in dry.stdout
    assert docker_env.labelled("ps") == []
    made = mngr("host", "create", "x", "-p", p, *limits)
    assert made.exit_code == 0, made.stderr
    inspected = docker_env.engine.docker("inspect", "--format", "{{json .HostConfig}}", f"x.{p}")
    host_config = json.loads(inspected.stdout)
    assert (host_config["Memory"], host_config["NanoCpus"]) == (2147483648, 500000000)
    resources = by_name(listed(mngr, "--provider", p))["x"]["resources"]
    assert (resources["memory_gb"], resources["cpus"]) == (2, 0.5)
    assert mngr("host", "destroy", "x", "-p", p, "--yes", "--force").exit_code == 0


def test_ctrl_c_of_an_exec_without_a_terminal_ends_the_process_in_the_container(
    docker_env: DockerEnv, mngr
) -> None:
    """`mngr host exec h -- sleep 100 | cat`, then Ctrl-C: the terminal sends SIGINT to the
    whole foreground group (mngr and its docker client); nothing may keep running inside."""
    import signal

    p = docker_env.provider
    assert mngr("host", "create", "ctl", "--provider", p).exit_code == 0
    argv = [sys.executable, "-m", "mngr", "host", "exec", "ctl", "-p", p, "--"]
    proc = subprocess.Popen(
        [*argv, "sh", "-c", "sleep 4242 & sleep 4343"],
        stdin=subprocess.PIPE,  # no terminal anywhere
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    count = ["sh", "-c", "ps | grep -c '[s]leep 4[23]4[23]'"]

    def running() -> str:
        done = subprocess.run([*argv, *count], capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    deadline = time.monotonic() + 30
    while running() != "2" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == "2"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(60) == 130
    deadline = time.monotonic() + 10
    while running() != "0" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running() == "0"
