"""Bench of the docker backend: `mngr host list --provider local_docker` at 1 and 50 hosts.

Prints the median wall time of the listing (as the CLI, and in-process without the CLI's
start-up), the 50/1 ratio (the cost must not grow with the number of hosts: target < 1.3),
and how many docker processes one listing spawns (counted through a logging `docker` shim).

Run as root: python bench/docker_list.py [--runs N] [--hosts N]
It starts a private dockerd (tests/docker/dockerd.py) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from measure import median_ms  # noqa: E402

from tests.docker import dockerd  # noqa: E402


def interleaved(a: tuple[str, ...], b: tuple[str, ...], runs: int) -> tuple[float, float]:
    times: dict[tuple[str, ...], list[float]] = {a: [], b: []}
    for _ in range(runs):
        for args in (a, b):
            start = time.perf_counter()
            cli(*args)
            times[args].append((time.perf_counter() - start) * 1000)
    return statistics.median(times[a]), statistics.median(times[b])


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mngr", *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"mngr {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def in_process_list() -> int:
    from mngr import config
    from mngr.engine import Engine

    result = Engine(config.load()).list_hosts(["local_docker"])
    if result.errors:
        raise SystemExit(f"list failed: {result.errors[0].message}")
    return len(result.hosts)


def docker_processes_per_list(scratch: Path) -> int:
    """Run one `mngr host list` with a `docker` shim first on PATH that logs each start."""
    shim_dir = scratch / "shim"
    shim_dir.mkdir(exist_ok=True)
    log = scratch / "docker-calls.log"
    log.write_text("")
    shim = shim_dir / "docker"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {dockerd.DOCKER} "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim_dir}:{os.environ['PATH']}"}
    cli("host", "list", "--provider", "local_docker", "-q", env=env)
    return len(log.read_text().splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--hosts", type=int, default=50)
    args = parser.parse_args()
    why = dockerd.missing()
    if why:
        raise SystemExit(f"cannot run a Docker engine here: {why}")

    scratch = Path(tempfile.mkdtemp(prefix="mngr-bench-docker-", dir="/tmp"))
    home = scratch / "home"
    os.environ.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CACHE_HOME=str(home / ".cache"),
    )
    engine = dockerd.start()
    os.environ["DOCKER_HOST"] = engine.host  # the built-in local_docker, no settings at all
    image = ("--image", dockerd.TEST_IMAGE)
    rows: list[tuple[str, str]] = []
    try:
        engine.build_test_image()
        server = engine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        client = engine.docker("version", "--format", "{{.Client.Version}}").stdout.strip()
        rows.append(("docker client / server", f"{client} / {server}"))
        timings: dict[int, float] = {}
        for count in (1, args.hosts):
            have = len(cli("host", "list", "--provider", "local_docker", "-q").split())
            names = [f"bench-{i}" for i in range(have, count)]
            if names:
                cli("--jobs", "8", "host", "create", *names, "-p", "local_docker", *image)
            assert in_process_list() == count
            timings[count] = median_ms(
                lambda: cli("host", "list", "--provider", "local_docker"), args.runs
            )
            in_process = median_ms(in_process_list, args.runs)
            spawned = docker_processes_per_list(scratch)
            rows += [
                (f"mngr host list -p local_docker, {count} host(s)", f"{timings[count]:.0f} ms"),
                (f"  in-process Engine.list_hosts, {count} host(s)", f"{in_process:.0f} ms"),
                (f"  docker processes per list, {count} host(s)", str(spawned)),
            ]
        ratio = timings[args.hosts] / timings[1]
        rows.append((f"ratio {args.hosts} / 1 hosts (target < 1.3)", f"{ratio:.2f}"))
        # The same comparison with the two lists interleaved, so that load from anything
        # else on the machine falls on both alike: a second instance on the daemon holds 1.
        settings = home / ".config" / "mngr" / "settings.toml"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(f'[providers.docker_one]\nbackend = "docker"\nhost = "{engine.host}"\n')
        cli("host", "create", "solo", "-p", "docker_one", *image)
        one, many = interleaved(
            ("host", "list", "-p", "docker_one"), ("host", "list", "-p", "local_docker"), args.runs
        )
        rows += [
            ("interleaved: list of 1 host / of 50 hosts", f"{one:.0f} ms / {many:.0f} ms"),
            ("interleaved ratio (target < 1.3)", f"{many / one:.2f}"),
        ]
    finally:
        engine.stop()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
