"""Bench of provisioning: a pyinfra deploy of 50 `server.shell` operations on one container,
through mngr's connector (`@mngr/box.PROVIDER`) against pyinfra's own `@docker/CONTAINER` on
the same container, run alternately so that load from anything else falls on both alike
(target: mngr's no slower than 1.2x). Also a single file up to the container: the connector's
one-command `cat > TEMP && mv` against `Service.push` (the tar stream of `host push`).

Run as root: python bench/provision.py [--runs N] [--ops N]
It starts a private dockerd (tests/docker/dockerd.py) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.docker import dockerd  # noqa: E402


def run(*argv: str) -> float:
    """Wall ms of one command, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {done.stderr.strip()[-2000:]}")
    return elapsed


def file_up(ref: str, runs: int, size: int) -> tuple[float, float]:
    """Median ms of one file of `size` bytes into the host: connector put_file, Service.push."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all

    from mngr import config
    from mngr.service import Service

    inventory = Inventory(([f"@mngr/{ref}"], {}))
    connect_all(State(inventory, Config()))
    host = inventory.get_host(f"@mngr/{ref}")
    data = os.urandom(size)
    local = Path(tempfile.mkdtemp()) / "file.bin"
    local.write_bytes(data)
    service = Service(config.load(None))
    put, push = [], []
    for _ in range(runs):
        start = time.perf_counter()
        host.put_file(io.BytesIO(data), "/tmp/put.bin")
        put.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        service.push(ref, [str(local)], "/tmp/pushed")
        push.append((time.perf_counter() - start) * 1000)
    return statistics.median(put), statistics.median(push)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--ops", type=int, default=50)
    args = parser.parse_args()
    why = dockerd.missing()
    if why:
        raise SystemExit(f"cannot run a Docker engine here: {why}")
    scratch = Path(tempfile.mkdtemp(prefix="mngr-bench-provision-", dir="/tmp"))
    home = scratch / "home"
    os.environ.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CACHE_HOME=str(home / ".cache"),
    )
    os.chdir(scratch)
    engine = dockerd.start()
    os.environ["DOCKER_HOST"] = engine.host  # for pyinfra's @docker connector
    rows: list[tuple[str, str]] = []
    try:
        engine.build_test_image()
        settings = home / ".config" / "mngr" / "settings.toml"
        settings.parent.mkdir(parents=True)
        settings.write_text(
            f'[providers.bench]\nbackend = "docker"\nhost = "{engine.host}"\n'
            f'image = "{dockerd.TEST_IMAGE}"\n'
        )
        mngr = [sys.executable, "-m", "mngr"]
        run(*mngr, "host", "create", "box", "-p", "bench")
        [container] = engine.docker("ps", "-q", "--no-trunc").stdout.split()
        engine.docker("exec", container, "mkdir", "-p", "/tmp")  # busybox from scratch: none
        deploy = scratch / "deploy.py"
        deploy.write_text(
            "from pyinfra.operations import server\n"
            f"for i in range({args.ops}):\n"
            "    server.shell(name=f'op {i}', commands=[f'echo {i} > /tmp/op-{i}'])\n"
        )
        pyinfra = [sys.executable, "-m", "pyinfra"]
        targets = {"mngr": "@mngr/box.bench", "docker": f"@docker/{container}"}
        times: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.runs):
            for name, target in targets.items():
                times[name].append(run(*pyinfra, target, str(deploy), "--yes"))
        empty = scratch / "empty.py"
        empty.write_text("")
        base = {name: [] for name in targets}  # the same run with no operation: start-up
        for _ in range(args.runs):
            for name, target in targets.items():
                base[name].append(run(*pyinfra, target, str(empty), "--yes"))
        med = {name: statistics.median(t) for name, t in times.items()}
        start = {name: statistics.median(t) for name, t in base.items()}
        client = engine.docker("version", "--format", "{{.Client.Version}}").stdout.strip()
        server = engine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        rows.append(("docker client / server", f"{client} / {server}"))
        for name, target in targets.items():
            per_op = (med[name] - start[name]) / args.ops
            rows.append((f"{target.split('/')[0]}: {args.ops} ops, median", f"{med[name]:.0f} ms"))
            rows.append(("  same, no operation (start-up)", f"{start[name]:.0f} ms"))
            rows.append(("  per operation", f"{per_op:.1f} ms"))
        rows.append(
            ("ratio mngr / docker, whole run (target <= 1.2)", f"{med['mngr'] / med['docker']:.2f}")
        )
        per = {n: (med[n] - start[n]) / args.ops for n in targets}
        rows.append(("ratio mngr / docker, per operation", f"{per['mngr'] / per['docker']:.2f}"))
        for size, label in ((4096, "4 KiB"), (8 << 20, "8 MiB")):
            put, push = file_up("box.bench", args.runs, size)
            rows.append(
                (
                    f"one {label} file up: connector put_file / Service.push",
                    f"{put:.0f} ms / {push:.0f} ms",
                )
            )
    finally:
        engine.stop()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
