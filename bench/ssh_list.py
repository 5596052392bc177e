"""Bench of the ssh pool backend against 4 real sshd daemons on loopback.

Prints the median wall time of:
- listing the pool (one ssh per machine, concurrently), in-process and as `mngr host list`,
  with connection reuse (ControlMaster, warm) and without (a handshake per machine);
- an exec round trip (`true` on a host), as the bare ssh command and as `mngr host exec`;
- `mngr host list -p local`, for the CLI's own start-up cost on this machine.

Run: python bench/ssh_list.py [--runs N]   (needs openssh-server; root, or /run/sshd)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from measure import median_ms  # noqa: E402

from tests.ssh.sshd_pool import Pool, missing  # noqa: E402


def cli(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mngr", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"mngr {' '.join(args)} failed: {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--machines", type=int, default=4)
    runs = parser.parse_args().runs
    count = parser.parse_args().machines
    why = missing()
    if why:
        raise SystemExit(f"cannot start sshd here: {why}")

    scratch = Path(tempfile.mkdtemp(prefix="mngr-bench-", dir="/tmp"))
    home = scratch / "home"
    home.mkdir()
    os.environ.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(scratch),
    )
    settings = home / ".config" / "mngr" / "settings.toml"
    settings.parent.mkdir(parents=True)

    pool = Pool.start(scratch / "pool", count)
    try:
        from mngr import config
        from mngr.engine import Engine

        results: dict[str, float] = {
            # The CLI's own start-up, for scale: what `mngr host ...` costs before any ssh.
            "mngr host list -p local (baseline, no ssh)": median_ms(
                lambda: cli("host", "list", "-p", "local"), max(5, runs // 2)
            ),
        }
        for label, persist in (("reuse", 60), ("no reuse", 0)):
            settings.write_text(pool.provider_toml(control_persist_s=persist))
            engine = Engine(config.load())
            backend = engine.backend("pool")
            if not backend.list_hosts():
                cli("host", "create", "bench", "-p", "pool")
                backend.list_hosts()  # warm: masters up
            host = next(h for h in backend.list_hosts() if h.name == "bench")
            exec_argv = backend.exec_command(host, ["true"]).argv

            results[f"list {count} machines, in-process, {label}"] = median_ms(
                backend.list_hosts, runs
            )
            results[f"mngr host list -p pool ({count} machines), {label}"] = median_ms(
                lambda: cli("host", "list", "-p", "pool"), max(5, runs // 2)
            )
            results[f"exec round trip, bare ssh, {label}"] = median_ms(
                lambda argv=exec_argv: subprocess.run(argv, check=True, stdin=subprocess.DEVNULL),
                runs,
            )
            results[f"mngr host exec bench -- true, {label}"] = median_ms(
                lambda: cli("host", "exec", "bench", "-p", "pool", "--", "true"),
                max(5, runs // 2),
            )
        width = max(map(len, results))
        print(f"ssh pool bench: {count} sshd on loopback, median of {runs} runs (ms)")
        for name, value in results.items():
            print(f"  {name:<{width}}  {value:8.1f}")
    finally:
        pool.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
