"""`host list` of an aws provider at 1 and at 200 hosts: how many `aws` processes one list
starts, how many API pages it reads, and its wall time, with the real aws CLI against a
local moto server (the numbers say nothing about EC2's own latency).

- processes: counted by the runner the backend is given (one per vendor call);
- pages: DescribeInstances requests the server saw during the list;
- wall: median of the backend's list_hosts(), and of a whole `mngr host list` process
  (with its CPU time, aws child included: steadier than wall time on a busy machine).

Run: python bench/aws_list.py [--runs N] [--sizes 1,200] [--page-sizes 0,50]
(page size 0: the CLI's default, one page of up to 1,000).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import machine, measure  # noqa: E402

from tests.aws.motoserver import CREDENTIALS, IMAGE, MotoServer, aws_binary  # noqa: E402


def seed(server: MotoServer, provider: str, count: int) -> None:
    """Make `count` hosts the way mngr tags them, through boto3 (fast, in-process)."""
    import boto3

    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=server.url)
    for index in range(count):
        tags = [
            {"Key": "mngr:host-id", "Value": f"host-{index:032x}"},
            {"Key": "mngr:host-name", "Value": f"host-{index}"},
            {"Key": "mngr:provider", "Value": provider},
            {"Key": "mngr:created-at", "Value": "2026-01-01T00:00:00Z"},
            {"Key": "Name", "Value": f"host-{index}"},
        ]
        client.run_instances(
            ImageId=IMAGE,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )


def settings_home(home: Path, server: MotoServer, page_size: int) -> dict[str, str]:
    config = home / ".config" / "mngr"
    config.mkdir(parents=True, exist_ok=True)
    lines = [
        "[providers.bench]",
        'backend = "aws"',
        'region = "us-east-1"',
        f'endpoint_url = "{server.url}"',
        f'binary = "{aws_binary()}"',
    ]
    if page_size:
        lines.append(f"page_size = {page_size}")
    (config / "settings.toml").write_text("\n".join(lines) + "\n")
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "NO_COLOR": "1",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1,200")
    parser.add_argument("--page-sizes", default="0,50")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    page_sizes = [int(p) for p in args.page_sizes.split(",")]
    if not aws_binary():
        raise SystemExit("the aws CLI is not installed (pip install awscli)")
    os.environ.update(CREDENTIALS)

    from mngr_backends.aws import AwsBackend, AwsConfig

    from mngr.runner import Runner

    mngr = Path(sys.executable).with_name("mngr")
    mngr_argv = [str(mngr)] if mngr.exists() else [sys.executable, "-m", "mngr"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = MotoServer(Path(tmp) / "moto.log")
        try:
            for size in sizes:
                server.reset()
                seed(server, "bench", size)
                for page_size in page_sizes:
                    config = AwsConfig(
                        name="bench",
                        backend="aws",
                        region="us-east-1",
                        endpoint_url=server.url,
                        binary=aws_binary(),
                        page_size=page_size or None,
                    )
                    walls, processes, pages = [], [], []
                    for _ in range(args.runs):
                        runner = Runner()
                        backend = AwsBackend(config, runner)
                        before = server.requests()
                        start = time.perf_counter()
                        listed = backend.list_hosts()
                        walls.append((time.perf_counter() - start) * 1000)
                        processes.append(len(runner.calls))
                        pages.append(server.requests() - before)
                        assert len(listed) == size, (len(listed), size)
                    env = settings_home(Path(tmp) / f"home-{size}-{page_size}", server, page_size)
                    whole = measure(
                        "cli",
                        [*mngr_argv, "host", "list", "-p", "bench", "-f", "json"],
                        runs=args.runs,
                        env=env,
                    )
                    rows.append(
                        (
                            size,
                            page_size or "default",
                            max(processes),
                            max(pages),
                            statistics.median(walls),
                            whole.median_ms,
                            whole.cpu_ms,
                            whole.peak_mib,
                        )
                    )
        finally:
            server.stop()
    print(f"### aws list ({machine()}; aws CLI + moto on loopback, {args.runs} runs)\n")
    print(
        "| hosts | page size | aws processes per list | API pages | list_hosts() median (ms) "
        "| `mngr host list` median wall / CPU (ms) | peak RSS (MiB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size, page, procs, pgs, wall, cli, cpu, rss in rows:
        print(
            f"| {size} | {page} | {procs} | {pgs} | {wall:.0f} | {cli:.0f} / {cpu:.0f} "
            f"| {rss:.1f} |"
        )


if __name__ == "__main__":
    main()
