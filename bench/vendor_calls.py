"""Vendor processes (or HTTP requests) per `host list`, for every backend, at 1 and at many
hosts, with a stand-in vendor that prints a listing of that size (`cat` of a file, so the
figures are mngr's own cost: argv, one process per call, parsing, no vendor latency).

    local    no vendor: reads one record file per host
    docker   `docker ps` (one JSON line per container)
    aws      `aws ec2 describe-instances` (the CLI pages by itself: one process)
    ssh      one `ssh` per machine of the pool (a machine holds at most one host)
    modal    one shim process (`python -m mngr_backends.modal_shim list`)
    mngr     one GET /v1/hosts to a loopback server

Counts come from the runner the engine is given (every vendor process it starts) and from
the server's request log; time is the median of Engine.list_hosts() in this process.

Run: python bench/vendor_calls.py [--runs N] [--hosts 1,1000] [--machines 1,50]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import machine  # noqa: E402

CREATED = "2026-03-01T10:00:00Z"


def host_id(index: int) -> str:
    return f"host-{index:032x}"


# --- listings of n hosts, as each vendor prints them ---------------------------------------


def docker_listing(n: int, provider: str) -> str:
    rows = []
    for i in range(n):
        labels = {
            "mngr.host-id": host_id(i),
            "mngr.host-name": f"h{i}",
            "mngr.created-at": CREATED,
            "mngr.tags": "{}",
        }
        rows.append(
            json.dumps(
                {
                    "ID": f"{i:064x}",
                    "Names": f"h{i}.{provider}",
                    "State": "running",
                    "Status": "Up 2 hours",
                    "Image": "debian:bookworm-slim",
                    "Labels": labels,
                }
            )
        )
    return "\n".join(rows) + "\n"


def aws_listing(n: int, provider: str) -> str:
    instances = []
    for i in range(n):
        tags = {
            "mngr:host-id": host_id(i),
            "mngr:host-name": f"h{i}",
            "mngr:provider": provider,
            "mngr:created-at": CREATED,
            "Name": f"h{i}",
        }
        instances.append(
            {
                "InstanceId": f"i-{i:017x}",
                "ImageId": "ami-0123456789abcdef0",
                "InstanceType": "t3.micro",
                "State": {"Code": 16, "Name": "running"},
                "PrivateIpAddress": f"10.0.{i // 250}.{i % 250 + 1}",
                "Placement": {"AvailabilityZone": "us-east-1a"},
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
            }
        )
    return json.dumps({"Reservations": [{"Instances": instances}]}, indent=4)


def ssh_read(index: int) -> str:
    record = {"schema_version": 1, "id": host_id(index), "name": "h", "created_at": CREATED}
    return f"{host_id(index)} h\n{json.dumps(record, indent=2)}\n"


def host_rows(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": host_id(i),
            "name": f"h{i}",
            "provider": "local",
            "backend": "local",
            "state": "running",
            "created_at": CREATED,
            "tags": {},
            "resources": {},
            "sandbox_id": f"sb-{i:016x}",
            "snapshots": [],
        }
        for i in range(n)
    ]


# --- stand-ins -----------------------------------------------------------------------------


def cat_vendor(path: Path, listing: str) -> str:
    """A vendor that prints `listing` whatever it is asked (sh + cat: no start-up of note)."""
    data = path.with_suffix(".out")
    data.write_text(listing)
    path.write_text(f"#!/bin/sh\nexec cat '{data}'\n")
    path.chmod(0o755)
    return str(path)


class Server:
    """A loopback `mngr serve` stand-in answering GET /v1/hosts with a fixed body."""

    def __init__(self, body: bytes) -> None:
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- one backend at one size ----------------------------------------------------------------


def provider_toml(name: str, backend: str, fields: dict[str, object]) -> str:
    lines = [f"[providers.{name}]", f'backend = "{backend}"']
    for key, value in fields.items():
        if key == "machines":
            tables = [
                "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in m.items()) + " }"
                for m in value
            ]  # type: ignore[attr-defined]
            lines.append(f"machines = [{', '.join(tables)}]")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def setup(backend: str, n: int, base: Path) -> tuple[str, Callable[[], int], Callable[[], None]]:
    """Settings text for provider `p` holding n hosts; a request counter; a cleanup."""
    no_requests: Callable[[], int] = lambda: 0  # noqa: E731
    done: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "local":
        from mngr_backends.local import LocalBackend, LocalConfig

        from mngr.backend import CreateRequest
        from mngr.plan import execute
        from mngr.runner import Runner

        local = LocalBackend(LocalConfig(name="p", backend="local", root=str(base)), Runner())
        for i in range(n):
            execute(local.create_plan(CreateRequest(f"h{i}", host_id(i), CREATED)), local)
        return provider_toml("p", "local", {"root": str(base)}), no_requests, done
    if backend == "docker":
        binary = cat_vendor(base / "docker", docker_listing(n, "p"))
        return provider_toml("p", "docker", {"binary": binary}), no_requests, done
    if backend == "aws":
        binary = cat_vendor(base / "aws", aws_listing(n, "p"))
        fields = {"binary": binary, "region": "us-east-1"}
        return provider_toml("p", "aws", fields), no_requests, done
    if backend == "ssh":
        # Every machine prints the same record: enough to count processes and parse n hosts.
        binary = cat_vendor(base / "ssh", ssh_read(0))
        machines = [
            {"name": f"m{i}", "address": f"10.8.{i // 250}.{i % 250 + 1}"} for i in range(n)
        ]
        fields = {
            "binary": binary,
            "machines": machines,
            "control_persist_s": 0,
            "known_hosts": str(base / "known_hosts"),
        }
        return provider_toml("p", "ssh", fields), no_requests, done
    if backend == "modal":
        python = cat_vendor(base / "python", json.dumps({"hosts": host_rows(n)}))
        return provider_toml("p", "modal", {"python": python}), no_requests, done
    if backend == "mngr":
        server = Server(json.dumps({"hosts": host_rows(n), "errors": []}).encode())
        os.environ["BENCH_MNGR_TOKEN"] = "bench-token-0123456789"
        fields = {"url": server.url, "token_env": "BENCH_MNGR_TOKEN"}
        return provider_toml("p", "mngr", fields), lambda: server.requests, server.stop
    raise ValueError(backend)


def bench(backend: str, n: int, base: Path, runs: int) -> tuple[int, int, int, float]:
    """(hosts listed, vendor processes per list, HTTP requests per list, median ms)."""
    from mngr import config
    from mngr.engine import Engine
    from mngr.runner import Runner

    base.mkdir(parents=True)
    text, requests, cleanup = setup(backend, n, base)
    settings = Path(os.environ["XDG_CONFIG_HOME"]) / "mngr" / "settings.toml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(text)
    try:
        times, processes, asked, listed = [], [], [], 0
        for _ in range(runs):
            runner = Runner()
            engine = Engine(config.load(), runner)
            before = requests()
            start = time.perf_counter()
            result = engine.list_hosts(["p"])
            times.append((time.perf_counter() - start) * 1000)
            if result.errors:
                raise SystemExit(f"{backend}: {result.errors[0].message}")
            listed = len(result.hosts)
            processes.append(len(runner.calls))
            asked.append(requests() - before)
        return listed, max(processes), max(asked), statistics.median(times)
    finally:
        cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--hosts", default="1,1000")
    parser.add_argument("--machines", default="1,50", help="ssh pool sizes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.hosts.split(",")]
    pools = [int(s) for s in args.machines.split(",")]
    with tempfile.TemporaryDirectory(prefix="mngr-bench-calls-") as tmp:
        home = Path(tmp) / "home"
        os.environ.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local/share"),
            XDG_CACHE_HOME=str(home / ".cache"),
            NO_COLOR="1",
        )
        os.environ.pop("MNGR_CONFIG", None)
        rows = []
        for backend in ("local", "docker", "aws", "ssh", "modal", "mngr"):
            for n in pools if backend == "ssh" else sizes:
                base = Path(tmp) / f"{backend}-{n}"
                rows.append((backend, *bench(backend, n, base, args.runs)))
    print(f"### Vendor calls per `host list` ({machine()}; stand-in vendors, {args.runs} runs)\n")
    print(
        "| backend | hosts | vendor processes per list | HTTP requests per list "
        "| Engine.list_hosts median (ms) |"
    )
    print("|---|---:|---:|---:|---:|")
    for backend, listed, processes, requests, median in rows:
        print(f"| {backend} | {listed} | {processes} | {requests} | {median:.0f} |")


if __name__ == "__main__":
    main()
