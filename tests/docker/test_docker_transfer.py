"""push / pull with a container of the real Docker engine: the busybox test image has tar but
no rsync, so every transfer is a tar stream over `docker exec`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mngr.errors import MngrError, NotFoundError
from tests.docker.conftest import DockerEnv
from tests.support.trees import make_tree, round_trip

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "tree")


@pytest.fixture
def service(docker_env: DockerEnv, mngr):  # noqa: ANN001, ANN201
    assert mngr("host", "create", "box", "--provider", docker_env.provider).exit_code == 0
    from mngr import config
    from mngr.service import Service

    return Service(config.load(None))


def test_push_and_pull_keep_the_tree(service, tree: Path, tmp_path: Path) -> None:  # noqa: ANN001
    pushed, pulled = round_trip(service, "box", tree, tmp_path / "back", None)
    assert pushed.method == pulled.method == "tar"  # no rsync in the image
    assert pushed.sent > 50 * 2**20
    ls = service.engine.backend(service.resolve_host("box").provider)
    cmd = ls.exec_command(service.resolve_host("box"), ["ls", "-a", "in dir"])
    listed = subprocess.run(cmd.argv, capture_output=True, text=True, check=True).stdout
    assert listed.split() == [".", "..", "tree"]  # no temporary folder left


def test_failures_are_one_line(service, docker_env: DockerEnv, mngr, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "a").write_text("a")
    with pytest.raises(NotFoundError, match="on host box.*: ./gone"):
        service.pull("box", ["gone"], str(tmp_path / "back"))
    with pytest.raises(MngrError, match="push failed: .*") as unwritable:
        service.push("box", [str(tmp_path / "a")], "/bin/busybox/under")
    assert "\n" not in str(unwritable.value)
    assert not (tmp_path / "back").exists()
    assert mngr("host", "stop", "box", "--provider", docker_env.provider).exit_code == 0
    with pytest.raises(MngrError, match="is stopped; start it first"):
        service.push("box", [str(tmp_path / "a")])


def test_ctrl_c_during_a_push_leaves_no_process_and_no_temporary_folder(
    service,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge.bin", "wb") as f:
        f.truncate(8 << 30)
    code = (
        "import sys; from mngr import config; from mngr.service import Service; "
        "Service(config.load(None)).push('box', [sys.argv[1]], '/dest')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(src)], stderr=subprocess.PIPE)
    host = service.resolve_host("box")
    backend = service.engine.backend(host.provider)

    def on_host(script: str) -> str:
        cmd = backend.exec_command(host, ["sh", "-c", script])
        return subprocess.run(cmd.argv, capture_output=True, text=True).stdout

    # The engine unpacks fast (a few GB/s of zeros): wait inside the container, then at once
    # interrupt, while the file is still arriving in the temporary folder.
    arriving = (
        "i=0; while [ $i -lt 3000 ]; do find /dest -type f 2>/dev/null | grep -q mngr-push "
        "&& exit 0; usleep 20000; i=$((i+1)); done"
    )
    on_host(arriving)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    left = "find /dest -type f -o -name '.mngr-push*'; ps | grep -e '[t]ar -x' -e '[s]et -e; dest'"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and on_host(left):
        time.sleep(0.2)
    assert on_host(left) == ""
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_child_of(int(p), proc.pid)]


def _is_child_of(pid: int, parent: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return int(fields[1]) == parent


def test_push_and_pull_go_through_the_engines_archive_api(
    service,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A push by tar copies each source with `docker cp SRC C:TEMP/p`, or with an --exclude
    unpacks one archive with `docker cp - C:TEMP` (then a script in the container places
    what came); a pull runs `docker cp C:PATH TEMP` for each source (absolute: relative
    paths start at the container's working folder)."""
    host = service.resolve_host("box")
    backend = service.engine.backend(host.provider)
    asked: list[str] = []
    copied: list[tuple[str, str]] = []
    real, real_in = type(backend).copy_out_command, type(backend).copy_in_command

    def spy(self, host, path, folder):  # noqa: ANN001, ANN202
        asked.append(path)
        return real(self, host, path, folder)

    def spy_in(self, host, path, folder):  # noqa: ANN001, ANN202
        copied.append((path, folder))
        return real_in(self, host, path, folder)

    monkeypatch.setattr(type(backend), "copy_out_command", spy)
    monkeypatch.setattr(type(backend), "copy_in_command", spy_in)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("keep.txt", "skip.o", "sub/keep2.txt"):
        (src / name).write_text(name)
    service.push("box", [str(src)], "/w/pushed", exclude=["*.o"])
    service.push("box", [str(src / "sub")], "/w/pushed/src", delete=True)
    pushed = [(path, folder) for path, folder in copied if folder != "/"]
    assert [path for path, _ in pushed] == ["-", str(src / "sub")]
    assert re.fullmatch(r"/w/pushed/\.mngr-push\.\w+", pushed[0][1])
    assert re.fullmatch(r"/w/pushed/src/\.mngr-push\.\w+/p", pushed[1][1])
    listed = subprocess.run(
        backend.exec_command(host, ["find", "/w/pushed"]).argv, capture_output=True, text=True
    ).stdout.split()
    assert sorted(listed) == [
        "/w/pushed", "/w/pushed/src", "/w/pushed/src/keep.txt", "/w/pushed/src/sub",
        "/w/pushed/src/sub/keep2.txt",
    ]  # fmt: skip
    script = (
        "mkdir -p '/w/in dir/sub' && cd /w && echo one > 'in dir/a.txt' && "
        "echo two > 'in dir/sub/b.o' && chmod 751 'in dir/sub' && ln -s a.txt 'in dir/l' && "
        "touch -d @1700000000 'in dir/a.txt' && chmod 4755 'in dir/a.txt'"
    )
    cmd = backend.exec_command(host, ["sh", "-c", script])
    subprocess.run(cmd.argv, check=True)
    back = tmp_path / "back"
    pulled = service.pull("box", ["/w/in dir", "/w/in dir/l"], str(back), exclude=["*.o"])
    assert pulled.method == "tar" and pulled.received > 0
    assert asked == ["/w/in dir", "/w/in dir/l"]
    assert (back / "in dir" / "a.txt").read_text() == "one\n"
    assert (back / "in dir" / "a.txt").stat().st_mtime == 1700000000
    assert oct((back / "in dir" / "a.txt").stat().st_mode & 0o7777) == "0o755"  # no setuid
    assert oct((back / "in dir" / "sub").stat().st_mode & 0o777) == "0o751"
    assert os.readlink(back / "l") == "a.txt"
    assert not (back / "in dir" / "sub" / "b.o").exists()  # excluded
    contents = tmp_path / "contents"
    service.pull("box", ["../w/in dir/."], str(contents))  # from / (busybox's working folder)
    assert asked[-1].startswith("/") and asked[-1].endswith("/w/in dir/./.")
    assert sorted(p.name for p in contents.iterdir()) == ["a.txt", "l", "sub"]


def test_a_push_is_one_process_in_the_container(
    service,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe, the temporary folder and the placing are one `docker exec` (each exec costs
    ~0.1 s before the copy can start); without the engine's unpack command the archive goes
    on that exec's stdin after the word `tar`."""
    host = service.resolve_host("box")
    backend = service.engine.backend(host.provider)
    execs: list[list[str]] = []
    real = type(backend).exec_command

    def spy(self, host, argv, **kwargs):  # noqa: ANN001, ANN003, ANN202
        execs.append(argv)
        return real(self, host, argv, **kwargs)

    monkeypatch.setattr(type(backend), "exec_command", spy)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("by the engine")
    service.push("box", [str(src)], "/w/one")
    assert len(execs) == 1
    monkeypatch.setattr(type(backend), "copy_in_command", lambda self, host, path, folder: None)
    (src / "a.txt").write_text("on stdin\n")
    assert service.push("box", [str(src)], "/w/one").method == "tar"
    assert len(execs) == 2
    monkeypatch.undo()
    (tmp_path / "link").symlink_to("src/a.txt")
    service.push("box", [f"{src}/.", str(tmp_path / "link")], "/w/two")  # by their paths
    script = "ls -A /w/one /w/two; cat /w/one/src/a.txt; readlink /w/two/link"
    cmd = backend.exec_command(host, ["sh", "-c", script])
    listed = subprocess.run(cmd.argv, capture_output=True, text=True, check=True).stdout
    assert listed.split("\n") == ["/w/one:", "src", "", "/w/two:", "a.txt", "link"] + [
        "on stdin",
        "src/a.txt",
        "",
    ]


def test_ctrl_c_during_a_pull_leaves_no_process_and_no_partial_file(
    service,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    host = service.resolve_host("box")
    backend = service.engine.backend(host.provider)
    cmd = backend.exec_command(host, ["truncate", "-s", "8G", "/huge.bin"])
    subprocess.run(cmd.argv, check=True)
    back = tmp_path / "back"
    back.mkdir()
    code = (
        "import sys; from mngr import config; from mngr.service import Service; "
        "Service(config.load(None)).pull('box', ['/huge.bin'], sys.argv[1])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(back)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        p.is_file() and p.stat().st_size > 0 for p in back.rglob("*")
    ):
        time.sleep(0.05)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    assert list(back.iterdir()) == []  # the temporary folder and the partial file are gone
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_child_of(int(p), proc.pid)]


def test_a_pull_by_the_engine_reports_progress_as_the_file_arrives(
    service,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    host = service.resolve_host("box")
    backend = service.engine.backend(host.provider)
    cmd = backend.exec_command(host, ["truncate", "-s", "1G", "/large.bin"])
    subprocess.run(cmd.argv, check=True)
    seen: list[int] = []
    pulled = service.pull("box", ["/large.bin"], str(tmp_path / "back"), progress=seen.append)
    assert pulled.received == 1 << 30
    assert seen and seen == sorted(seen) and 0 <= seen[-1] <= 1 << 30, seen
    assert (tmp_path / "back" / "large.bin").stat().st_size == 1 << 30
