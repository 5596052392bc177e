"""Bench of push / pull: MB/s of one 200 MB file and of 1,000 small files, each against the
plain vendor tool on the same host (`docker cp` for a container, `scp` and `rsync -e ssh` for
an sshd pool machine, `cp -a` and `rsync` for a local host), and the re-push of an unchanged
1,000-file tree (seconds and bytes sent). Target: within 1.5x of the vendor tool for the large
file. mngr is timed in-process (Service.push/pull), without the CLI's start-up (~0.2 s), in
turns with the vendor tool it is compared with, the disk synced before each timing.

Run as root: python bench/transfer.py [--runs N]
It starts a private dockerd (tests/docker/dockerd.py) and one sshd on loopback
(tests/ssh/sshd_pool.py), and removes them and every file it made afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BIG_MB = 200
SMALL = 1000


Timed = tuple[Callable[[], object], Callable[[], object]]  # (action, reset before it)


def paired(mngr: Timed, vendor: Timed, runs: int) -> tuple[float, float]:
    """Median seconds of each, run in turns (mngr, vendor, mngr, ...) so both meet the same
    load; the disk is synced before each timing so neither pays for the other's writes."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for (action, reset), seen in zip((mngr, vendor), times, strict=True):
            reset()
            os.sync()
            start = time.perf_counter()
            action()
            seen.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def timed(action: Callable[[], object], runs: int, reset: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        reset()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    scratch = Path(tempfile.mkdtemp(prefix="mngr-bench-transfer-"))
    home = scratch / "home"
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share")):
        os.environ[var] = str(home / sub)
    os.environ["HOME"] = str(home)
    from tests.docker import dockerd
    from tests.ssh.sshd_pool import Pool, keygen

    engine = dockerd.find_or_start()
    pool = None
    try:
        engine.build_test_image()
        pool = Pool.start(scratch / "pool", 1, keygen(scratch / "id_ed25519"))
        settings = home / ".config" / "mngr" / "settings.toml"
        settings.parent.mkdir(parents=True)
        settings.write_text(
            pool.provider_toml()
            + f'[providers.dk]\nbackend = "docker"\nhost = "{engine.host}"\n'
            + f'image = "{dockerd.TEST_IMAGE}"\n'
        )
        os.environ["MNGR_CONFIG"] = str(settings)
        run_benches(scratch, engine, pool, runs)
    finally:
        if pool is not None:
            pool.stop()
        engine.remove_labelled("dk")
        engine.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run_benches(scratch: Path, engine, pool, runs: int) -> None:  # noqa: ANN001
    from mngr import config
    from mngr.service import Service

    service = Service(config.load(None))
    data = scratch / "data"
    (data / "many").mkdir(parents=True)
    with open(data / "big.bin", "wb") as f:
        for _ in range(BIG_MB):
            f.write(os.urandom(1 << 20))
    for i in range(SMALL):
        (data / "many" / f"f{i:04}.txt").write_text(f"small file {i}\n" * (i % 7 + 1))
    small_mb = sum(p.stat().st_size for p in (data / "many").iterdir()) / 2**20
    back = scratch / "back"

    hosts = {}
    for provider in ("local", "pool", "dk"):
        hosts[provider] = service.create_host("bench", provider=provider)

    def clear_back() -> None:
        shutil.rmtree(back, ignore_errors=True)
        back.mkdir()

    def on_host(provider: str, *argv: str) -> Callable[[], None]:
        host = hosts[provider]
        backend = service.engine.backend(host.provider)

        def run() -> None:
            command = backend.exec_command(
                host, ["sh", "-c", 'rm -rf in; [ $# -eq 0 ] || mkdir -p "$@"', "-", *argv]
            )
            subprocess.run(command.argv, cwd=command.cwd, check=True, capture_output=True)

        return run

    # The vendor tools, each given the same work: (push argv, pull argv) per item.
    machine = pool.machines[0]
    ssh_opts = [
        "-i", str(pool.client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={pool.known_hosts}",
    ]  # fmt: skip
    pool_dir = hosts["pool"].address["dir"]
    target = f"{pool.user}@{machine.address}"
    local_dir = hosts["local"].address["path"]
    container = hosts["dk"].handle
    docker = ["docker", "--host", engine.host]
    rsh = shlex_join(["ssh", *ssh_opts, "-p", str(machine.port)])

    def vendor(provider: str, tool: str, item: str) -> tuple[list[str], list[str]]:
        src = str(data / item)
        if provider == "dk":
            return [*docker, "cp", src, f"{container}:/in/"], [
                *docker, "cp", f"{container}:/in/{item}", str(back)
            ]  # fmt: skip
        if provider == "pool" and tool == "scp":
            scp = ["scp", "-O", "-q", "-r", "-p", *ssh_opts, "-P", str(machine.port)]
            return [*scp, src, f"{target}:{pool_dir}/in/"], [
                *scp, f"{target}:{pool_dir}/in/{item}", str(back)
            ]  # fmt: skip
        if provider == "pool":
            rs = ["rsync", "-rlptD", "-e", rsh]
            return [*rs, src, f"{target}:{pool_dir}/in/"], [
                *rs, f"{target}:{pool_dir}/in/{item}", str(back)
            ]  # fmt: skip
        if tool == "cp":
            return ["cp", "-a", src, f"{local_dir}/in/"], [
                "cp",
                "-a",
                f"{local_dir}/in/{item}",
                str(back),
            ]
        return ["rsync", "-rlptD", src, f"{local_dir}/in/"], [
            "rsync", "-rlptD", f"{local_dir}/in/{item}", str(back)
        ]  # fmt: skip

    tools = {"local": ["cp", "rsync"], "pool": ["scp", "rsync"], "dk": ["docker cp"]}
    names = {"local": "local", "pool": "ssh pool", "dk": "docker"}
    print("| host | what | mngr push | vendor push | mngr pull | vendor pull | vendor |")
    print("|---|---|---:|---:|---:|---:|---|")
    for provider in ("local", "pool", "dk"):
        method = service.push(
            "bench", [str(data / "many" / "f0000.txt")], "probe", provider=provider
        ).method
        for item, mb in (("big.bin", BIG_MB), ("many", small_mb)):
            mngr_push = (
                lambda i=item, p=provider: service.push("bench", [str(data / i)], "in", provider=p),
                on_host(provider),
            )
            mngr_pull = (
                lambda i=item, p=provider: service.pull(
                    "bench", [f"in/{i}"], str(back), provider=p
                ),
                clear_back,
            )
            for tool in tools[provider]:
                push_argv, pull_argv = vendor(provider, tool, item)
                push_s, v_push = paired(
                    mngr_push, (lambda a=push_argv: sh(*a), on_host(provider, "in")), runs
                )
                pull_s, v_pull = paired(mngr_pull, (lambda a=pull_argv: sh(*a), clear_back), runs)
                what = (
                    f"{item} ({mb:.0f} MB)" if item == "big.bin" else f"{SMALL} files ({mb:.1f} MB)"
                )
                cells = [f"{mb / t:.1f} MB/s ({t:.2f} s)" for t in (push_s, v_push, pull_s, v_pull)]
                print(f"| {names[provider]} ({method}) | {what} | {' | '.join(cells)} | {tool} |")

    print()
    print("| host | re-push of an unchanged 1,000-file tree | seconds | bytes sent |")
    print("|---|---|---:|---:|")
    for provider in ("local", "pool"):
        service.push("bench", [str(data / "many")], "again", provider=provider)
        results = [
            service.push("bench", [str(data / "many")], "again", provider=provider)
            for _ in range(runs)
        ]
        secs = statistics.median(r.seconds for r in results)
        print(f"| {names[provider]} | mngr push (rsync) | {secs:.2f} | {results[-1].sent} |")
    rs = [
        "rsync",
        "-rlptD",
        "--stats",
        "-e",
        rsh,
        str(data / "many"),
        f"{target}:{pool_dir}/again/",
    ]
    sh(*rs)
    plain = timed(lambda: sh(*rs), runs, lambda: None)
    print(f"| ssh pool | plain rsync -e ssh | {plain:.2f} | |")


def shlex_join(words: list[str]) -> str:
    import shlex

    return shlex.join(words)


if __name__ == "__main__":
    main()
