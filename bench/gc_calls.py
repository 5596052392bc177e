"""Vendor processes per `mngr gc --dry-run` (Service.prepare_gc), per backend, at 1 and at
100 hosts, each host with a snapshot and as many snapshots of destroyed hosts, through a
stand-in vendor that answers each verb with a listing of that size (a `case` over its
arguments and `cat`: the figures are mngr's own calls, not vendor latency).

    local    no vendor: reads the folders and the snapshot descriptions
    docker   `docker ps`, `docker image ls`, one `docker image inspect` of every image
    aws      `describe-instances` (pages by itself), `describe-images`, `describe-snapshots`
    ssh      one `ssh` per machine of the pool (all at once, as list): "hosts" are machines,
             each holding a claim a killed create left (no host record)

Run: python bench/gc_calls.py [--hosts 1,100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import machine  # noqa: E402
from vendor_calls import CREATED, aws_listing, docker_listing, host_id, provider_toml  # noqa: E402


def case_vendor(path: Path, answers: dict[str, str]) -> str:
    """A vendor that prints the answer of the first pattern its arguments match."""
    lines = ["#!/bin/sh", 'case " $* " in']
    for i, (pattern, text) in enumerate(answers.items()):
        data = path.with_name(f"{path.name}.{i}.out")
        data.write_text(text)
        lines.append(f"  *'{pattern}'*) exec cat '{data}' ;;")
    lines += ["esac", "exit 1"]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return str(path)


def docker_images(n: int) -> tuple[str, str]:
    """`image ls -q` and `image inspect` of 2n snapshots: n of live hosts, n of gone ones."""
    images = []
    for i in range(2 * n):
        labels = {"mngr.kind": "snapshot", "mngr.provider": "p", "mngr.host-id": host_id(i),
                  "mngr.host-name": f"h{i}", "mngr.snapshot-id": f"snap-{i:032x}",
                  "mngr.created-at": CREATED}  # fmt: skip
        images.append({"Id": f"sha256:{i:064x}", "Created": CREATED, "Size": 1 << 20,
                       "RepoTags": [f"mngr-snapshot:snap-{i:032x}"],
                       "Config": {"Labels": labels}})  # fmt: skip
    return "\n".join(i["Id"] for i in images) + "\n", json.dumps(images)


def aws_images(n: int) -> tuple[str, str]:
    images, snaps = [], []
    for i in range(2 * n):
        tags = {"mngr:provider": "p", "mngr:host-id": host_id(i), "mngr:host-name": f"h{i}"}
        ebs = f"snap-{i:017x}"
        images.append({"ImageId": f"ami-{i:017x}", "State": "available", "CreationDate": CREATED,
                       "BlockDeviceMappings": [{"DeviceName": "/dev/xvda",
                                                "Ebs": {"SnapshotId": ebs}}],
                       "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]})  # fmt: skip
        snaps.append({"SnapshotId": ebs, "StartTime": CREATED, "VolumeSize": 8,
                      "Tags": [{"Key": "mngr:provider", "Value": "p"}]})  # fmt: skip
    return json.dumps({"Images": images}), json.dumps({"Snapshots": snaps})


def setup(backend: str, n: int, base: Path) -> str:
    if backend == "local":
        from mngr_backends.local import LocalBackend, LocalConfig

        from mngr.backend import CreateRequest
        from mngr.plan import execute
        from mngr.runner import Runner

        local = LocalBackend(LocalConfig(name="p", backend="local", root=str(base)), Runner())
        for i in range(2 * n):
            execute(local.create_plan(CreateRequest(f"h{i}", host_id(i), CREATED)), local)
            [host] = [h for h in local.list_hosts() if h.name == f"h{i}"]
            execute(local.snapshot_create_plan(host, f"s{i}"), local)
            if i >= n:  # half the hosts are destroyed: their snapshots are orphans
                execute(local.destroy_plan(host), local)
        return provider_toml("p", "local", {"root": str(base)})
    if backend == "docker":
        ids, inspect = docker_images(n)
        rows = [json.loads(line) for line in docker_listing(n, "p").splitlines()]
        for row in rows:  # gc lists every container of the provider: each says its kind
            row["Labels"]["mngr.kind"] = "host"
        ps = "".join(json.dumps(row) + "\n" for row in rows)
        answers = {" ps ": ps, " ls ": ids, " inspect ": inspect}
        return provider_toml("p", "docker", {"binary": case_vendor(base / "docker", answers)})
    if backend == "aws":
        images, snaps = aws_images(n)
        answers = {"describe-instances": aws_listing(n, "p"), "describe-images": images,
                   "describe-snapshots": snaps}  # fmt: skip
        fields = {"binary": case_vendor(base / "aws", answers), "region": "us-east-1"}
        return provider_toml("p", "aws", fields)
    if backend == "ssh":
        # Every machine answers alike: a claim of provider p without a record, a day old.
        claim = f"claim {1_700_000_000} {host_id(0)} h0 p\n--record--\n"
        machines = [{"name": f"m{i}", "address": f"127.0.{i // 250}.{i % 250 + 1}"}
                    for i in range(n)]  # fmt: skip
        fields = {"binary": case_vendor(base / "ssh", {"--record--": claim}),
                  "machines": machines, "control_persist_s": 0,
                  "known_hosts": str(base / "known_hosts")}  # fmt: skip
        return provider_toml("p", "ssh", fields)
    raise ValueError(backend)


def bench(backend: str, n: int, base: Path) -> tuple[int, int, int]:
    """(orphans found, of them snapshots, vendor processes per gc --dry-run)."""
    from mngr import config
    from mngr.runner import Runner
    from mngr.service import Service

    base.mkdir(parents=True)
    settings = Path(os.environ["XDG_CONFIG_HOME"]) / "mngr" / "settings.toml"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(setup(backend, n, base))
    runner = Runner()
    report, _ = Service(config.load(), runner).prepare_gc(["p"], snapshots=True)
    if report.errors:
        raise SystemExit(f"{backend}: {report.errors[0].message}")
    found = report.delete + [o for o, _ in report.kept]
    return len(found), sum(o.snapshot for o in found), len(runner.calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,100")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mngr-bench-gc-") as tmp:
        home = Path(tmp) / "home"
        os.environ.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local/share"),
            XDG_CACHE_HOME=str(home / ".cache"),
        )
        os.environ.pop("MNGR_CONFIG", None)
        for backend in ("local", "docker", "aws", "ssh"):
            for n in (int(s) for s in args.hosts.split(",")):
                rows.append((backend, n, *bench(backend, n, Path(tmp) / f"{backend}-{n}")))
    print(f"### Vendor processes per `mngr gc --dry-run` ({machine()}; stand-in vendors)\n")
    print("| backend | hosts | orphans found (snapshots of destroyed hosts) | vendor processes |")
    print("|---|---:|---:|---:|")
    for backend, n, found, snaps, calls in rows:
        print(f"| {backend} | {n} | {found} ({snaps}) | {calls} |")


if __name__ == "__main__":
    main()
