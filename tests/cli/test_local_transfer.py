"""push / pull on the local backend (a host is a folder on this machine) with real rsync and
tar: round trips, incremental re-push, mirrors, excludes, failures and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mngr.errors import MngrError, NotFoundError, UsageError
from tests.conftest import require
from tests.support.trees import describe, differences, make_tree, round_trip

METHODS = ["rsync", "tar"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "tree")


@pytest.fixture
def service(mngr):  # noqa: ANN001, ANN201
    require(subprocess.run(["which", "rsync"], capture_output=True).returncode == 0, "no rsync")
    assert mngr("host", "create", "web").exit_code == 0
    from mngr import config
    from mngr.service import Service

    return Service(config.load(None))


def folder_of(service, name: str = "web") -> Path:  # noqa: ANN001
    return Path(service.resolve_host(name).address["path"])


@pytest.mark.parametrize("method", METHODS)
def test_push_and_pull_keep_the_tree(service, tree: Path, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    round_trip(service, "web", tree, tmp_path / "back", method)
    on_host = folder_of(service) / "in dir" / tree.name
    assert not differences(describe(tree), describe(on_host))
    assert not [p for p in (folder_of(service) / "in dir").iterdir() if p.name != tree.name]


def test_a_second_push_of_an_unchanged_tree_sends_almost_nothing(service, tree: Path) -> None:  # noqa: ANN001
    first = service.push("web", [str(tree)], "copy")
    again = service.push("web", [str(tree)], "copy")
    assert first.method == again.method == "rsync"
    assert first.sent > 50 * 2**20
    assert again.sent < 100_000, again  # the file list only: 1,000+ names
    (tree / "many" / "f0001.txt").write_text("changed\n")
    try:
        one = service.push("web", [str(tree)], "copy")
        assert one.sent < 200_000
        assert (folder_of(service) / "copy/tree/many/f0001.txt").read_text() == "changed\n"
    finally:
        (tree / "many" / "f0001.txt").write_text("small file 1\n" * 2)
        os.utime(tree / "many" / "f0001.txt", (1_700_000_000, 1_700_000_000))


@pytest.mark.parametrize("method", METHODS)
def test_delete_mirrors_and_exclude_skips(service, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("keep.txt", "skip.o", "sub/keep2.txt", "sub/skip2.o"):
        (src / name).write_text(name)
    assert service.push("web", [str(src)], ".", exclude=["*.o"], method=method)
    host_src = folder_of(service) / "src"
    assert sorted(str(p.relative_to(host_src)) for p in host_src.rglob("*")) == [
        "keep.txt", "sub", "sub/keep2.txt"
    ]  # fmt: skip
    (host_src / "stale.txt").write_text("old")
    service.push("web", [str(src)], ".", exclude=["*.o"], method=method)
    assert (host_src / "stale.txt").exists()  # no --delete: a merge
    service.push("web", [str(src)], ".", exclude=["*.o"], delete=True, method=method)
    assert not (host_src / "stale.txt").exists()
    assert (host_src / "sub" / "keep2.txt").exists()

    back = tmp_path / "back"
    service.pull("web", ["src"], str(back), exclude=["sub/"], method=method)
    assert sorted(p.name for p in (back / "src").iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("method", METHODS)
def test_pushing_contents_never_touches_the_hosts_record(service, tmp_path: Path, method) -> None:  # noqa: ANN001
    src = tmp_path / "src"
    (src / ".mngr").mkdir(parents=True)
    (src / ".mngr" / "host.json").write_text("{}")
    (src / "a.txt").write_text("a")
    record = (folder_of(service) / ".mngr" / "host.json").read_text()
    service.push("web", [f"{src}/."], ".", delete=True, method=method)
    assert (folder_of(service) / "a.txt").read_text() == "a"
    assert (folder_of(service) / ".mngr" / "host.json").read_text() == record
    with pytest.raises(UsageError, match="mngr keeps its own files there"):
        service.push("web", [str(src / "a.txt")], "./sub/../.mngr", method=method)
    assert service.resolve_host("web").state == "running"


@pytest.mark.parametrize("method", METHODS)
def test_a_missing_source_is_one_line_and_not_found(service, tmp_path: Path, method) -> None:  # noqa: ANN001
    with pytest.raises(NotFoundError, match=r"no such file or folder: .*new\\nline") as local:
        service.push("web", [str(tmp_path / "new\nline")], method=method)
    with pytest.raises(NotFoundError, match="on host web.local: ./gone") as remote:
        service.pull("web", ["gone"], str(tmp_path / "back"), method=method)
    assert "\n" not in str(local.value) + str(remote.value)
    assert not (tmp_path / "back").exists()  # nothing made


@pytest.mark.parametrize("method", METHODS)
def test_an_unwritable_destination_is_one_line(service, tmp_path: Path, method) -> None:  # noqa: ANN001
    (tmp_path / "file").write_text("x")
    (folder_of(service) / "file").write_text("x")
    with pytest.raises(MngrError) as pushed:
        service.push("web", [str(tmp_path / "file")], "file/under", method=method)
    with pytest.raises(MngrError) as pulled:
        service.pull("web", ["file"], str(tmp_path / "file" / "under"), method=method)
    for error in (pushed.value, pulled.value):
        assert "\n" not in str(error) and "Not a directory" in str(error), error
    assert sorted(p.name for p in folder_of(service).iterdir()) == [".mngr", "file"]


def test_a_stopped_host_is_refused(service, mngr, tmp_path: Path) -> None:  # noqa: ANN001
    assert mngr("host", "stop", "web").exit_code == 0
    (tmp_path / "a").write_text("a")
    for verb in (service.push, service.pull):
        with pytest.raises(MngrError, match="is stopped; start it first"):
            verb("web", [str(tmp_path / "a")])


def _holding(marker: str) -> list[int]:
    """Processes whose environment names the host id (rsync, its remote shell, the server)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_during_a_push_leaves_no_process_and_no_partial_file(
    service,
    tmp_path: Path,
    method: str,  # noqa: ANN001
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "huge.bin", "wb") as f:
        f.truncate(4 << 30)  # sparse here, 4 GiB of zeros read and sent
    host = service.resolve_host("web")
    folder = Path(host.address["path"])
    env = {**os.environ, "MNGR_TEST_MARK": host.id}
    argv = [sys.executable, "-m", "mngr", "host", "push", "web", str(src), "--to", "dest"]
    if method == "tar":  # the CLI picks rsync here: force the tar stream through the Service
        code = (
            "import sys; from mngr import config; from mngr.service import Service; "
            "Service(config.load(None)).push('web', [sys.argv[1]], 'dest', method='tar')"
        )
        argv = [sys.executable, "-c", code, str(src)]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        p.is_file() and p.stat().st_size > 0 for p in folder.rglob("*") if ".mngr/" not in str(p)
    ):
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0, err
    if method == "rsync":
        assert proc.returncode == 130 and err.strip() == "error: interrupted", err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _holding(host.id):
        time.sleep(0.1)
    assert not _holding(host.id)
    left = [p for p in folder.rglob("*") if ".mngr" not in p.parts and not p.is_dir()]
    assert not left  # folders rsync made ahead may stay; no file, whole or partial


def test_progress_reports_bytes_and_rate_as_data_moves(service, tree: Path) -> None:  # noqa: ANN001
    import io

    from mngr.output import TransferProgress

    for method in METHODS:
        seen: list[int] = []
        service.push(
            "web", [str(tree / "big.bin")], f"p-{method}", method=method, progress=seen.append
        )
        assert seen and seen == sorted(seen) and seen[-1] >= 50 * 2**20, (method, seen[-3:])
        assert (folder_of(service) / f"p-{method}" / "big.bin").is_file()  # DEST is a folder
    screen = io.StringIO()
    shown = TransferProgress(screen)
    shown.started -= 2
    shown(50 * 2**20)
    shown.finish()
    assert screen.getvalue() == "\r\x1b[K50.0 MiB  25.0 MiB/s\r\x1b[K"


def test_the_cli_pushes_and_pulls_and_prints_json_for_scripts(
    service, mngr, tmp_path: Path
) -> None:  # noqa: ANN001
    src = tmp_path / "src"
    src.mkdir()
    (src / "a b.txt").write_text("a")
    pushed = mngr("host", "push", "web", str(src), "--to", "in", "--format", "json")
    assert pushed.exit_code == 0, pushed.stderr
    assert pushed.json()["method"] == "rsync" and pushed.stderr == ""
    pulled = mngr("host", "pull", "web", "in/src", "--to", str(tmp_path / "back"))
    assert (pulled.exit_code, pulled.stdout, pulled.stderr) == (0, "", "")  # not a TTY: quiet
    assert (tmp_path / "back" / "src" / "a b.txt").read_text() == "a"
    missing = mngr("host", "pull", "web", "gone")
    assert missing.exit_code == 3
    assert missing.stderr == "error: no such file or folder on host web.local: ./gone\n"


def test_a_pull_refuses_an_archive_that_writes_outside_its_folder(
    service,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the host sends is unpacked by this machine's tar, which writes nothing outside the
    temporary folder: not a `..` name, not through a link to elsewhere."""
    import io
    import tarfile

    outside = tmp_path / "outside"
    outside.mkdir()
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name, kind, target in [
            ("ok.txt", tarfile.REGTYPE, ""),
            ("up", tarfile.SYMTYPE, str(outside)),
            ("up/through-link.txt", tarfile.REGTYPE, ""),
            ("../escaped.txt", tarfile.REGTYPE, ""),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, target, 2 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"x\n") if info.size else None)
    from mngr import transfer

    monkeypatch.setattr(transfer, "PULL_TAR_SCRIPT", 'cat -- "$EVIL"')
    monkeypatch.setenv("EVIL", str(evil))  # what the host sends instead of its `tar -c`
    (folder_of(service) / "src").write_text("src")
    back = tmp_path / "back"
    with pytest.raises(MngrError, match="pull failed: the host's archive was refused") as error:
        service.pull("web", ["src"], str(back), method="tar")
    assert "\n" not in str(error.value)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()
    assert list(back.iterdir()) == []  # nothing placed, no temporary folder left
