"""A real Docker engine for the tests and the bench: the one already running (used, and left
as found: only what the tests labelled is removed), or a private `dockerd` started here (root
only) that touches nothing of the machine's.

What a private dockerd would otherwise touch, and why it no longer does:
- `--bridge=none` makes dockerd *delete* any interface named `docker0` at start-up (moby's
  `removeDefaultBridgeInterface`), so a private engine once removed the running engine's
  bridge, and every bridged container of the user's Docker failed until it was restarted.
  Our dockerd runs in its own network namespace (`unshare --net`): whatever it does to
  interfaces, iptables or sysctls happens there. Its socket is a file under its temp root,
  which the tests reach from the machine's namespace as any other file.
- it runs in its own mount namespace with an empty tmpfs on /run: it never attaches to the
  machine's containerd (dockerd uses /run/containerd/containerd.sock when that exists) and
  leaves nothing in /run (plugin folder, containerd shim sockets);
- its data root, exec root, pidfile, socket and `--config-file` (an empty one: never the
  machine's /etc/docker/daemon.json) live in a fresh temp folder per engine, so private
  engines of suites running side by side never collide; iptables, ip-forward and masquerade
  are off as well.
Checked by hand (2026-12-01): a "system" dockerd on /var/run/docker.sock with its docker0
bridge, then the docker tests with CI=true: docker0 was still there and `docker run --rm
mngr-test-busybox:latest true` worked (before this change docker0 was gone and 4 tests
failed). tests/docker/test_dockerd_isolation.py checks it on every run.

Also builds the test image: `FROM scratch` plus the static busybox of Debian's
`busybox-static` (no registry is reachable from CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TEST_IMAGE = "mngr-test-busybox:latest"
DOCKER = shutil.which("docker") or "docker"
BUSYBOX = "/bin/busybox"
DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
"""


@dataclass
class Engine:
    host: str  # what `docker --host` takes
    process: subprocess.Popen[bytes] | None = None  # set when we started dockerd
    root: Path | None = None
    built_image: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ours(self) -> bool:
        return self.process is not None

    def docker(self, *args: str, check: bool = True, timeout: float = 120, **kw: object):
        return subprocess.run(
            [DOCKER, "--host", self.host, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            **kw,  # type: ignore[arg-type]
        )

    def answers(self) -> bool:
        try:
            return (
                self.docker("info", "--format", "{{.ID}}", check=False, timeout=10).returncode == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def build_test_image(self) -> None:
        if self.docker("image", "inspect", TEST_IMAGE, check=False).returncode == 0:
            return
        with tempfile.TemporaryDirectory(prefix="mngr-img-") as ctx:
            shutil.copy(BUSYBOX, Path(ctx) / "busybox")
            (Path(ctx) / "Dockerfile").write_text(DOCKERFILE)
            self.docker("build", "--quiet", "--tag", TEST_IMAGE, ctx)
        self.built_image = True

    def remove_labelled(self, provider: str) -> None:
        """Remove every container and image a test provider left (by its label only)."""
        label = f"label=mngr.provider={provider}"
        ids = self.docker("ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            self.docker("rm", "--force", "--volumes", *ids, check=False)
        images = self.docker("image", "ls", "-q", "--filter", label, check=False).stdout.split()
        if images:
            self.docker("rmi", "--force", *dict.fromkeys(images), check=False)

    def stop(self) -> None:
        if self.process is None:
            if self.built_image:
                self.docker("rmi", TEST_IMAGE, check=False)
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def missing() -> str | None:
    """Why no engine can be had here, or None."""
    if shutil.which(DOCKER) is None:
        return "the docker CLI is not installed (Debian package docker.io)"
    if not os.path.exists(BUSYBOX):
        return f"{BUSYBOX} is missing (Debian package busybox-static)"
    return None


# In the new mount namespace: an empty /run for dockerd alone, then dockerd itself ("$@").
_PRIVATE_RUN = 'mount -t tmpfs mngr-dockerd-run /run && exec "$@"'


def running() -> Engine | None:
    """The engine DOCKER_HOST or the default socket points at, if it answers."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    engine = Engine(host)
    return engine if engine.answers() else None


def start(log: Path | None = None, wait_s: float = 60) -> Engine:
    """Start a private dockerd and wait until `docker info` answers."""
    dockerd, unshare = shutil.which("dockerd"), shutil.which("unshare")
    if dockerd is None:
        raise RuntimeError("dockerd is not installed (Debian package docker.io)")
    if unshare is None:
        raise RuntimeError("unshare is not installed (Debian package util-linux)")
    if os.geteuid() != 0:
        raise RuntimeError("starting dockerd needs root")
    root = Path(tempfile.mkdtemp(prefix="mngr-dockerd-", dir="/tmp"))  # short socket paths
    sock = root / "docker.sock"
    (root / "daemon.json").write_text("{}\n")
    out = open(log or root / "dockerd.log", "wb")  # noqa: SIM115 - the daemon's log
    process = subprocess.Popen(
        [
            unshare,
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _PRIVATE_RUN,
            "sh",
            dockerd,
            "--config-file",
            str(root / "daemon.json"),
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "--host",
            f"unix://{sock}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = Engine(f"unix://{sock}", process, root)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if sock.exists() and engine.answers():
            return engine
        time.sleep(0.2)
    tail = (log or root / "dockerd.log").read_text(errors="replace")[-2000:]
    engine.stop()
    raise RuntimeError(f"dockerd did not come up within {wait_s:g}s: {tail}")


def find_or_start() -> Engine:
    engine = running()
    if engine is not None:
        return engine
    return start()
