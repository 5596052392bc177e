"""List fan-out and scale, with a stand-in vendor CLI (no real vendor involved).

- fan-out: `mngr host list` over 1, 4 and 16 providers whose vendor takes 1 s each: the wall
  time should stay close to one provider's, not the sum;
- scale: one provider returning 10,000 hosts: parse + render time and peak memory, for the
  table and for JSON.

Run: python bench/fanout_scale.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Measurement, machine, measure, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN_MNGR = [sys.executable, str(ROOT / "tests" / "support" / "run_mngr.py")]


def settings(home: Path, providers: dict[str, dict[str, str]]) -> dict[str, str]:
    cfg = home / ".config" / "mngr"
    cfg.mkdir(parents=True, exist_ok=True)
    # The built-in local_docker (there whenever docker is on PATH) is not what is measured.
    lines = ["[providers.local_docker]", "enabled = false", ""]
    for name, fields in providers.items():
        lines.append(f"[providers.{name}]")
        lines += [f'{k} = "{v}"' for k, v in fields.items()]
        lines.append("timeout_s = 30")
        lines.append("")
    (cfg / "settings.toml").write_text("\n".join(lines))
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }


def fanout(base: Path, runs: int) -> list[Measurement]:
    vendor = base / "slow-vendor"
    vendor.write_text("#!/bin/sh\nsleep 1\necho '[]'\n")
    vendor.chmod(0o755)
    rows = []
    for count in (1, 4, 16):
        home = base / f"fanout{count}"
        env = settings(
            home,
            {
                f"p{i}": {"backend": "fakecli", "binary": str(vendor), "state_dir": str(home / "s")}
                for i in range(count)
            },
        )
        rows.append(
            measure(
                f"list, {count} providers x 1 s",
                [*RUN_MNGR, "host", "list"],
                runs=runs,
                env=env,
                target="close to 1 s",
            )
        )
    return rows


def scale(base: Path, runs: int) -> list[Measurement]:
    home = base / "scale"
    home.mkdir()
    listing = home / "list.json"
    hosts = [{"id": f"host-{i:032x}", "name": f"h{i}", "state": "running"} for i in range(10_000)]
    listing.write_text(json.dumps(hosts))
    vendor = home / "cat-vendor"
    vendor.write_text(f"#!/bin/sh\nexec cat '{listing}'\n")
    vendor.chmod(0o755)
    env = settings(
        home, {"big": {"backend": "fakecli", "binary": str(vendor), "state_dir": str(home / "s")}}
    )
    return [
        measure(
            "list 10,000 hosts, table", [*RUN_MNGR, "host", "list", "-p", "big"], runs=runs, env=env
        ),
        measure(
            "list 10,000 hosts, json",
            [*RUN_MNGR, "host", "list", "-p", "big", "-f", "json"],
            runs=runs,
            env=env,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print(f"machine: {machine()}\n")
        print_table("List fan-out (stand-in vendor sleeping 1 s)", fanout(base, args.runs))
        print_table("Scale: one provider, 10,000 hosts", scale(base, args.runs))


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
