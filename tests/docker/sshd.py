"""A real sshd on a loopback address, for Docker's ssh transport (`host = "ssh://..."`).

Keys are generated per run; the client side is an `ssh` wrapper put first on PATH that adds
`-F <config>` (our key, our known_hosts with the server's real host key, strict checking),
since `docker` runs plain `ssh` and OpenSSH reads ~/.ssh from the passwd entry, not $HOME.
Sessions get DOCKER_HOST (sshd `SetEnv`) so the remote `docker system dial-stdio` reaches
the test engine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ADDRESS = "127.0.0.2"


@dataclass
class Sshd:
    address: str
    port: int
    process: subprocess.Popen[bytes]
    root: Path

    @property
    def bin_dir(self) -> Path:
        """Put first on PATH: holds the `ssh` wrapper that uses our keys."""
        return self.root / "bin"

    def url(self, user: str = "root") -> str:
        return f"ssh://{user}@{self.address}:{self.port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def missing() -> str | None:
    for name, package in (("sshd", "openssh-server"), ("ssh", "openssh-client")):
        if _binary(name) is None:
            return f"{name} is not installed (Debian package {package})"
    if os.geteuid() != 0:
        return "the remote-docker tests log in as root through sshd, which needs root"
    return None


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mngr-test", "-f", str(path)],
        check=True,
    )


def start(docker_host: str, address: str = ADDRESS, wait_s: float = 15) -> Sshd:
    root = Path(tempfile.mkdtemp(prefix="mngr-sshd-", dir="/tmp"))
    for key in ("host_key", "client_key"):
        _keygen(root / key)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = _free_port(address)
    (root / "sshd_config").write_text(
        f"ListenAddress {address}:{port}\n"
        f"HostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"  # the keys live under /tmp
        f"SetEnv DOCKER_HOST={docker_host}\n"
    )
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[{address}]:{port} {host_key[0]} {host_key[1]}\n")
    (root / "ssh_config").write_text(
        "Host *\n"
        f"  IdentityFile {root / 'client_key'}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {root / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
    )
    (root / "bin").mkdir()
    wrapper = root / "bin" / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {_binary("ssh")} -F {root / "ssh_config"} "$@"\n')
    wrapper.chmod(0o755)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log = open(root / "sshd.log", "wb")  # noqa: SIM115 - the daemon's log
    process = subprocess.Popen(
        [str(_binary("sshd")), "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Sshd(address, port, process, root)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    text = (root / "sshd.log").read_text(errors="replace")[-2000:]
    server.stop()
    raise RuntimeError(f"sshd did not start on {address}:{port}: {text}")
