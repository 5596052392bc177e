"""Folder trees for the push/pull tests: one made with every kind of entry a transfer must keep,
and a description of a tree (types, modes, mtimes, contents, link targets) to compare two."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

ODD_NAMES = ["with space", 'it\'s "quoted"', "new\nline", "ünïcödé-名前", "-dash", "a:colon"]
MTIME = 1_700_000_000


def make_tree(root: Path, *, small_files: int = 1000, big_mb: int = 50) -> Path:
    """Nested folders, a relative and a dangling symlink, an executable, an empty file,
    `small_files` small files, one `big_mb` MB file and names rsync and shells find odd."""
    (root / "nested" / "deeper" / "deepest").mkdir(parents=True)
    (root / "nested" / "deeper" / "deepest" / "leaf.txt").write_text("leaf\n")
    (root / "nested" / "link").symlink_to("deeper/deepest/leaf.txt")
    (root / "dangling").symlink_to("../does/not/exist")
    tool = root / "tool.sh"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    (root / "empty").write_bytes(b"")
    private = root / "private"
    private.write_text("secret-ish\n")
    private.chmod(0o600)
    for name in ODD_NAMES:
        (root / name).mkdir()
        (root / name / name).write_text(name)
    many = root / "many"
    many.mkdir()
    for i in range(small_files):
        (many / f"f{i:04}.txt").write_text(f"small file {i}\n" * (i % 7 + 1))
    if big_mb:
        with open(root / "big.bin", "wb") as f:
            for _ in range(big_mb):
                f.write(os.urandom(1 << 20))
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return root


def describe(root: Path) -> dict[str, tuple]:
    """Every entry under root: (kind, mode, mtime in whole seconds, content hash or target).
    Folder mtimes are left out where `folders` is false (a push into them changes them)."""
    seen: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            rel = str(path.relative_to(root))
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                seen[rel] = ("dir", oct(mode), int(info.st_mtime))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                seen[rel] = ("file", oct(mode), int(info.st_mtime), digest)
    return seen


def differences(a: dict[str, tuple], b: dict[str, tuple]) -> list[str]:
    """What differs between two descriptions, readable in an assertion message."""
    out = [f"only in first: {k!r}" for k in sorted(a.keys() - b.keys())]
    out += [f"only in second: {k!r}" for k in sorted(b.keys() - a.keys())]
    out += [f"{k!r}: {a[k]} != {b[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return out[:20]


def round_trip(service, host: str, tree: Path, back: Path, method: str | None) -> list:  # noqa: ANN001
    """Push `tree` into a folder with a space in its name on the host, pull it back into
    `back`; returns both results after checking the pulled copy equals the tree."""
    pushed = service.push(host, [str(tree)], "in dir", method=method)
    pulled = service.pull(host, [f"in dir/{tree.name}"], str(back), method=method)
    assert (pushed.method, pulled.method) == (method, method) if method else True
    diff = differences(describe(tree), describe(back / tree.name))
    assert not diff, diff
    return [pushed, pulled]
