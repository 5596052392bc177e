"""Real `sshd` daemons on loopback addresses (127.0.0.2, 127.0.0.3, ...), one per pool
machine, with generated host keys, one client key and a private known_hosts.

Used by the ssh tests (tests/ssh/conftest.py) and by bench/ssh_list.py.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it


def missing() -> str | None:
    """Why real sshd daemons cannot run here, or None when they can."""
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install openssh-client)"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if not PRIVSEP_DIR.is_dir():
        if os.geteuid() != 0:
            return f"{PRIVSEP_DIR} is missing and creating it needs root"
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError as exc:
        return f"cannot bind 127.0.0.2 (loopback aliases): {exc}"
    return None


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mngr-test", "-f", str(path)],
        check=True,
    )
    return path


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


@dataclass
class Sshd:
    """One machine: an sshd on `address:port`."""

    name: str
    address: str
    root: Path
    authorized_keys: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    host_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.address)
        self.host_key = keygen(self.root / "host_key")

    @property
    def known_hosts_line(self) -> str:
        key = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {key}\n"

    def start(self) -> None:
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}:{self.port}",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    # Debian's bash sources ~/.bashrc for ssh commands unless nested; this
                    # box's root .bashrc (pyenv init) costs ~200 ms a session, not ours.
                    "SetEnv SHLVL=1",
                    "",
                ]
            )
        )
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 - the daemon's stderr
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on {self.address}:{self.port} did not start")

    def stop(self) -> None:
        """Stop the daemon and every session it serves (as a powered-off machine would)."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def new_host_key(self) -> None:
        """Reinstall the machine: a new host key (the recorded one no longer matches)."""
        was_running = self.proc is not None
        self.stop()
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink()
        keygen(self.host_key)
        if was_running:
            self.start()


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (the per-connection sshd processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class Pool:
    """A pool of sshd machines and what a client needs to reach them."""

    root: Path
    machines: list[Sshd]
    client_key: Path
    known_hosts: Path
    user: str

    @classmethod
    def start(cls, root: Path, count: int, client_key: Path | None = None) -> Pool:
        root.mkdir(parents=True, exist_ok=True)
        if client_key is None:
            client_key = keygen(root / "client_key")
        authorized = root / "authorized_keys"
        authorized.write_text(client_key.with_suffix(".pub").read_text())
        machines = [
            Sshd(f"m{i}", f"127.0.0.{i + 1}", root / f"m{i}", authorized)
            for i in range(1, count + 1)
        ]
        pool = cls(root, machines, client_key, root / "known_hosts", getpass.getuser())
        try:
            for machine in machines:
                machine.start()
        except BaseException:
            pool.stop()
            raise
        pool.known_hosts.write_text("".join(m.known_hosts_line for m in machines))
        return pool

    def stop(self) -> None:
        for machine in self.machines:
            machine.stop()

    def provider_toml(self, name: str = "pool", **settings: object) -> str:
        """A `[providers.NAME]` settings block for this pool (machine m1 is 127.0.0.2...)."""
        lines = [
            f"[providers.{name}]",
            'backend = "ssh"',
            f'known_hosts = "{self.known_hosts}"',
            "connect_timeout_s = 5",
            "timeout_s = 20",
        ]
        lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
        for machine in self.machines:
            lines += [
                f"[[providers.{name}.machines]]",
                f'name = "{machine.name}"',
                f'address = "{machine.address}"',
                f"port = {machine.port}",
                f'user = "{self.user}"',
                f'identity_file = "{self.client_key}"',
                # All machines share this box's filesystem: give each its own host_dir.
                f'host_dir = "{self.root / "remote" / machine.name}"',
            ]
        return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return f'"{value}"'
