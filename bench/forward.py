"""Bench of `mngr host forward`: throughput (one large transfer each way) and latency (a new
connection per request; a round trip on an open connection), through the forward and
against the path without it:

- local host: a direct connection to the port;
- ssh pool (a real sshd on loopback): a direct connection, and plain `ssh -N -L`;
- docker (a real engine; busybox `nc` servers in the container): `docker exec -i C nc
  127.0.0.1 PORT` run per connection by hand, the vendor path without mngr's listener.
- team (a real `mngr serve --allow-local-exec` on loopback, its host a local one): a direct
  connection, and `mngr __remote-exec URL --port N` run per connection by hand (a process
  per connection, the path before the forward opened its WebSockets itself).

The forward runs as its own process (`--serve`, the Service forward the CLI uses).

Run: python bench/forward.py [--mb 256] [--runs 100] [--only local,ssh,docker,team]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# source: sends argv[1] bytes per connection; sink: reads to the end, answers "ok"; echo.
SERVERS = """
import socket, sys, threading
size = int(sys.argv[1])
def source(conn):
    block = memoryview(bytes(1 << 20))
    left = size
    while left:
        left -= conn.send(block[: min(left, len(block))])
    conn.close()
def sink(conn):
    while conn.recv(1 << 20):
        pass
    conn.sendall(b"ok")
    conn.close()
def echo(conn):
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
def quiet(handle, conn):
    try:
        handle(conn)
    except OSError:
        conn.close()
def serve(listener, handle):
    while True:
        threading.Thread(target=quiet, args=(handle, listener.accept()[0])).start()
ports = []
for handle in (source, sink, echo):
    listener = socket.create_server(("127.0.0.1", 0))
    ports.append(listener.getsockname()[1])
    threading.Thread(target=serve, args=(listener, handle), daemon=True).start()
print(" ".join(map(str, ports)), flush=True)
threading.Event().wait()
"""


def download(connect: Callable[[], socket.socket], size: int) -> float:
    """MB/s of receiving `size` bytes."""
    start = time.perf_counter()
    with connect() as sock:
        got = 0
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    assert got == size, (got, size)
    return size / (1 << 20) / (time.perf_counter() - start)


def upload(connect: Callable[[], socket.socket], size: int) -> float:
    block = bytes(1 << 20)
    start = time.perf_counter()
    with connect() as sock:
        for _ in range(size >> 20):
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(100), b""))
    assert answer.strip() in (b"ok", str(size).encode()), answer
    return size / (1 << 20) / (time.perf_counter() - start)


def new_connection_ms(connect: Callable[[], socket.socket], runs: int) -> float:
    """Median ms of connect, one byte there and back, close."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with connect() as sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def round_trip_ms(connect: Callable[[], socket.socket], runs: int) -> float:
    """Median ms of one byte there and back on an open connection."""
    times = []
    with connect() as sock:
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(runs):
            start = time.perf_counter()
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


NAMES = ("source", "sink", "echo")


def tcp(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port))


def tcp_servers(ports: list[int]) -> dict[str, Callable[[], socket.socket]]:
    """The source, sink and echo servers at these local ports."""
    return dict(zip(NAMES, map(tcp, ports), strict=True))


def through_command(argv: list[str]) -> Callable[[], socket.socket]:
    """A connection whose far end is a command's stdio (what the forward does per
    connection, without its listener)."""

    def connect() -> socket.socket:
        mine, theirs = socket.socketpair()
        subprocess.Popen(argv, stdin=theirs, stdout=theirs, start_new_session=True)
        theirs.close()
        return mine

    return connect


def measure(label: str, ports: dict[str, Callable[[], socket.socket]], mb: int, runs: int) -> dict:
    size = mb << 20
    row = {
        "path": label,
        "download MB/s": download(ports["source"], size),
        "upload MB/s": upload(ports["sink"], size),
        "new connection ms": new_connection_ms(ports["echo"], runs),
        "round trip ms": round_trip_ms(ports["echo"], runs * 5),
    }
    print(
        f"  {label:<44} {row['download MB/s']:8.0f} {row['upload MB/s']:8.0f} "
        f"{row['new connection ms']:9.2f} {row['round trip ms']:9.3f}",
        flush=True,
    )
    return row


@contextmanager
def forward(host: str, provider: str, remote: list[int]) -> Iterator[list[int]]:
    """The forward as its own process; the local ports, in the order of `remote`."""
    argv = [sys.executable, __file__, "--serve", host, provider, *map(str, remote)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        bound = json.loads(proc.stdout.readline())
        yield [b["port"] for b in bound]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def serve(host: str, provider: str, ports: list[str]) -> None:
    import signal

    from mngr.config import load
    from mngr.service import Service

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fwd = Service(load()).forward(host, ports, provider, report=lambda m: print(m, file=sys.stderr))
    try:
        bound = fwd.open()
        print(json.dumps([{"address": b.address, "port": b.port} for b in bound]), flush=True)
        fwd.serve()
    finally:
        fwd.close()


def cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mngr", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mngr {' '.join(args)} failed: {done.stderr.strip()}")


def bench_here(label: str, provider: str, servers: list[int], mb: int, runs: int) -> list[dict]:
    rows = [measure(f"{label}: direct", tcp_servers(servers), mb, runs)]
    with forward("bench", provider, servers) as local:
        rows.append(measure(f"{label}: mngr forward", tcp_servers(local), mb, runs))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--only", default="local,ssh,docker,team")
    parser.add_argument("--serve", nargs="+")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], args.serve[2:])
        return
    only = args.only.split(",")

    scratch = Path(tempfile.mkdtemp(prefix="mngr-bench-", dir="/tmp"))
    home = scratch / "home"
    os.environ.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(scratch),
    )
    settings = home / ".config" / "mngr" / "settings.toml"
    settings.parent.mkdir(parents=True)
    servers = subprocess.Popen(
        [sys.executable, "-c", SERVERS, str(args.mb << 20)], stdout=subprocess.PIPE, text=True
    )
    cleanups: list[Callable[[], None]] = [servers.kill]
    try:
        assert servers.stdout is not None
        ports = [int(p) for p in servers.stdout.readline().split()]
        print(f"forward bench: {args.mb} MB each way, latency median of {args.runs} connections")
        print(f"  {'path':<44} {'down MB/s':>8} {'up MB/s':>8} {'conn ms':>9} {'rtt ms':>9}")
        if "local" in only:
            settings.write_text("")
            cli("host", "create", "bench")
            bench_here("local", "local", ports, args.mb, args.runs)
        if "ssh" in only:
            from tests.ssh.sshd_pool import Pool

            pool = Pool.start(scratch / "pool", 1)
            cleanups.append(pool.stop)
            settings.write_text(pool.provider_toml())
            cli("host", "create", "bench", "-p", "pool")
            bench_here("ssh", "pool", ports, args.mb, args.runs)
            m = pool.machines[0]
            plain = [
                "ssh", "-N", "-F", "/dev/null", "-i", str(pool.client_key), "-p", str(m.port),
                "-o", f"UserKnownHostsFile={pool.known_hosts}", "-o", "BatchMode=yes",
            ]  # fmt: skip
            local = [_free_port() for _ in ports]
            for here, there in zip(local, ports, strict=True):
                plain += ["-L", f"127.0.0.1:{here}:127.0.0.1:{there}"]
            proc = subprocess.Popen([*plain, f"{pool.user}@{m.address}"])
            cleanups.append(proc.kill)
            _wait(local[0])
            measure("ssh: plain ssh -L", tcp_servers(local), args.mb, args.runs)
        if "docker" in only:
            bench_docker(settings, cleanups, args.mb, args.runs)
        if "team" in only:
            bench_team(scratch, settings, cleanups, ports, args.mb, args.runs)
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


def bench_docker(settings: Path, cleanups: list[Callable[[], None]], mb: int, runs: int) -> None:
    from tests.docker import dockerd

    engine = dockerd.find_or_start()
    cleanups.append(engine.stop)
    engine.build_test_image()
    settings.write_text(
        f'[providers.dk]\nbackend = "docker"\nhost = "{engine.host}"\n'
        f'image = "{dockerd.TEST_IMAGE}"\n'
    )
    cleanups.append(lambda: engine.remove_labelled("dk"))
    cli("host", "create", "bench", "-p", "dk")
    listed = subprocess.run(
        [sys.executable, "-m", "mngr", "host", "list", "-p", "dk", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    container = json.loads(listed.stdout)["hosts"][0]["address"]["container"]
    engine.docker("exec", container, "sh", "-c", f"head -c {mb << 20} /dev/zero > /big")
    for port, prog in ((9001, ["cat", "/big"]), (9002, ["wc", "-c"]), (9003, ["cat"])):
        engine.docker("exec", "--detach", container, "nc", "-ll", "-p", str(port), "-e", *prog)
    time.sleep(0.5)
    bare = [dockerd.DOCKER, "--host", engine.host, "exec", "-i", container, "nc", "127.0.0.1"]
    by_hand = {
        n: through_command([*bare, str(p)]) for n, p in zip(NAMES, (9001, 9002, 9003), strict=True)
    }
    measure("docker: docker exec -i nc, per connection", by_hand, mb, runs)
    with forward("bench", "dk", [9001, 9002, 9003]) as local:
        measure("docker: mngr forward", tcp_servers(local), mb, runs)


def bench_team(
    scratch: Path,
    settings: Path,
    cleanups: list[Callable[[], None]],
    ports: list[int],
    mb: int,
    runs: int,
) -> None:
    from tests.server.conftest import RW_TOKEN, TOKEN_ENV, start_serve

    (scratch / "serve").mkdir()
    server = start_serve(scratch / "serve", "--allow-local-exec")
    cleanups.append(server.stop)
    os.environ[TOKEN_ENV] = RW_TOKEN
    settings.write_text(
        f'[providers.team]\nbackend = "mngr"\nurl = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n'
    )
    cli("host", "create", "bench", "-p", "team")
    url = f"{server.url}/v1/hosts/bench/exec?provider=local"
    os.environ["MNGR_REMOTE_TOKEN"] = RW_TOKEN  # what `mngr __remote-exec` reads
    by_hand = {
        n: through_command([sys.executable, "-m", "mngr", "__remote-exec", url, "--port", str(p)])
        for n, p in zip(NAMES, ports, strict=True)
    }
    bench_here("team", "team", ports, mb, runs)
    measure("team: mngr __remote-exec --port, per connection", by_hand, mb, runs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)


if __name__ == "__main__":
    main()
