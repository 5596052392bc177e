"""File transfer (push / pull), written once over every backend's transport: the process a
backend runs in a host with stdin and stdout streamed (`Backend.exec_command`).

Two ways over that transport, chosen per transfer:

- **rsync**, when it is on both ends: the local rsync's remote shell (`-e`) is this module run
  as `python -m mngr.transfer rsh`, which execs the host's transport command for rsync's
  server. The -e string holds only safe words; which host to reach travels in the
  environment (`MNGR_TRANSPORT`, JSON), never through a shell. `--secluded-args` keeps file
  names out of the remote command line, so any name (spaces, quotes, newlines) arrives as is.
  rsync writes each file under a temporary name and renames it when complete.
- **tar** otherwise (a busybox container): a tar stream whose last member is a marker. The
  receiving end extracts into a temporary folder inside the destination and, only when the
  marker arrived, renames each entry into place (merging into folders that exist). A pull
  is unpacked by this machine's `tar` (Python's tarfile took twice as long as `docker cp`).
  A backend may have faster ways of its own, used for the tar method where it has them: the
  docker engine's archive API (`docker cp`) both ways, into and out of the temporary folder.

A push is one process in the host from the start: it probes (tools, working folder), then
waits for a word saying which way the archive comes, makes the temporary folder and places
what came (a `docker exec` costs ~0.1 s before the copy can start: two were a third of a
200 MB push).

Each SRC lands in DEST (a folder, made if missing) under its own name; `.` or `..` as the last
part of SRC means the folder's contents. Paths on the host are as `host exec` sees them:
relative ones start at the host's working folder.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mngr.errors import (
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnreachableError,
    UsageError,
    VendorMissingError,
)
from mngr.runner import Command

if TYPE_CHECKING:
    from mngr.backend import Backend
    from mngr.records import Host

Progress = Callable[[int], None]  # bytes moved so far

RSYNC, TAR = "rsync", "tar"
METHODS = (RSYNC, TAR)
TRANSPORT_ENV = "MNGR_TRANSPORT"
# rsync's own options: -rlptD is -a without owners and groups (not kept by tar either).
RSYNC_OPTIONS = ["-rlptD", "--secluded-args", "--no-human-readable", "--stats"]
# The words rsync puts on its server's command line under --secluded-args: options only.
_SAFE_WORD = re.compile(r"[A-Za-z0-9._,=+/@%:-]+")
_TERM_GRACE_S = 5.0
_PROBE_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
PAYLOAD, MARKER = "p", "ok"  # tar layout: every entry under p/, then the marker
_CWD = "cwd:"  # the probe's last line: the host's working folder follows (any bytes)
# This machine's tar unpacking a pull: as the user running mngr (owners are not kept, as with
# rsync), modes kept; GNU and BSD tar refuse names with `..` and write nothing through a link.
UNTAR = ["tar", "-x", "-p", "--no-same-owner", "--ignore-zeros", "-f", "-", "-C"]

# --- remote scripts (constants: values arrive only as "$1", "$2", ...) ---------------------

# Make folder $1 (unless empty); then which tools the host has, which of the other paths
# are missing (by position), and last the working folder (what relative paths start at;
# nothing after `cwd:` when its name holds a newline).
_PROBE = (
    'd=$1; shift; [ -z "$d" ] || mkdir -p -- "$d" || exit 3; '
    "command -v rsync >/dev/null 2>&1 && echo rsync; "
    'i=0; for p; do i=$((i+1)); [ -e "$p" ] || [ -L "$p" ] || echo "missing $i"; done; '
    f'case $PWD in *"\n"*) echo {_CWD};; *) printf "{_CWD}%s\\n" "$PWD";; esac; '
)
PROBE_SCRIPT = _PROBE + "exit 0"

# place SRC DST: rename SRC to DST; a folder onto a folder merges (unless $del is 1, then the
# old folder is replaced), keeping the folder's mode and mtime.
_PLACE_FUNCTION = (
    "place() { "
    'if [ "$del" != 1 ] && [ -d "$1" ] && [ ! -L "$1" ] && [ -d "$2" ] && [ ! -L "$2" ]; then '
    'local m a f; m=$(stat -c %Y -- "$1") && a=$(stat -c %a -- "$1") || return 1; '
    'for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do '
    '[ -e "$f" ] || [ -L "$f" ] || continue; place "$f" "$2/${f##*/}" || return 1; done; '
    'chmod "$a" "$2" && touch -d "@$m" "$2"; '
    'else if [ -d "$2" ] && [ ! -L "$2" ]; then '
    'mv -f -- "$2" "$tmp/old" && rm -rf -- "$tmp/old" || return 1; '
    'elif [ -d "$1" ] && [ ! -L "$1" ] && { [ -e "$2" ] || [ -L "$2" ]; }; then '
    'rm -f -- "$2" || return 1; fi; mv -fT -- "$1" "$2"; fi; }; '
)


# $1 delete (0/1), $2 DEST: the probe (DEST made), then one line on stdin says how the
# files come: `native` (by the backend's copy commands into a temporary folder in DEST, whose
# name (safe characters only) goes out first; then the line `ok` once every copy is done),
# `tar` (an archive on stdin, its marker last), none (rsync does the work). Only when the
# copy is complete is each entry placed; the temporary folder goes in every case.
PUSH_SCRIPT = (
    "del=$1; shift; "
    + _PROBE
    + 'read -r how || exit 0; set -e; dest=$d; tmp=$(mktemp -d "$dest/.mngr-push.XXXXXX"); '
    "trap 'rm -rf -- \"$tmp\"' EXIT; trap 'exit 130' INT TERM HUP; "
    + _PLACE_FUNCTION
    + f'if [ "$how" = native ]; then mkdir "$tmp/{PAYLOAD}"; echo "${{tmp##*/}}"; '
    f'read -r end || end=; [ "$end" = {MARKER} ] || '
    '{ echo "the copy ended early" >&2; exit 1; }; '
    f'else tar -x -o -f - -C "$tmp"; '
    f'[ -f "$tmp/{MARKER}" ] || {{ echo "the archive ended early" >&2; exit 1; }}; fi; '
    f'for f in "$tmp/{PAYLOAD}"/* "$tmp/{PAYLOAD}"/.[!.]* "$tmp/{PAYLOAD}"/..?*; do '
    '[ -e "$f" ] || [ -L "$f" ] || continue; place "$f" "$dest/${f##*/}" || exit 1; done'
)

# Pairs of (PARENT, NAME): one tar archive of each, one after the other.
PULL_TAR_SCRIPT = 'while [ $# -gt 1 ]; do tar -c -f - -C "$1" -- "$2" || exit 1; shift 2; done'


@dataclass
class TransferResult:
    host: str
    direction: str  # push | pull
    method: str  # rsync | tar
    sent: int = 0  # bytes this machine sent
    received: int = 0  # bytes this machine received
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}


@dataclass
class Transport:
    """How to reach one host: its backend's exec, with stdio streamed."""

    backend: Backend
    host: Host

    def argv(self, argv: list[str]) -> tuple[list[str], str | None, dict[str, str] | None]:
        command = self.backend.exec_command(self.host, argv)
        env = {**os.environ, **command.env} if command.env else None
        return command.argv, command.cwd, env

    def run(self, argv: list[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        command, cwd, env = self.argv(argv)
        with _process(command, cwd=cwd, env=env, stdout=subprocess.PIPE) as proc:
            try:
                out, err = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _end(proc)
                raise UnreachableError(
                    f"host {self.host.ref} did not answer within {timeout_s:g}s"
                ) from None
        return subprocess.CompletedProcess(command, proc.returncode, out, err)

    def rsh_env(self) -> dict[str, str]:
        """What `python -m mngr.transfer rsh` needs to build this host's transport again."""
        value = {
            "backend": self.backend.name,
            "config": self.backend.config.model_dump(mode="json"),
            "host": {**self.host.to_json(), "handle": self.host.handle},
        }
        return {TRANSPORT_ENV: json.dumps(value)}


@dataclass
class Request:
    sources: list[str]
    dest: str
    exclude: list[str] = field(default_factory=list)
    delete: bool = False
    method: str | None = None  # None: rsync when both ends have it, else tar
    protected: tuple[str, ...] = ()  # names in the host's working folder a push never touches
    progress: Progress | None = None


# --- push / pull ------------------------------------------------------------------------


def push(transport: Transport, request: Request) -> TransferResult:
    if not request.sources:
        raise UsageError("no source given")
    sources = [_local_source(s) for s in request.sources]
    dest = _host_path(request.dest or ".")
    _check_patterns(request.exclude)
    exclude = list(request.exclude)
    if request.protected:
        parts = posixpath.normpath(dest).split("/")
        if parts[0] in request.protected:
            raise UsageError(f"refusing to push into {dest!r}: mngr keeps its own files there")
        if parts == ["."]:
            exclude += [f"/{name}" for name in request.protected]
    _check_method(request.method)
    # One process in the host probes it, then (for tar) receives or places the archive.
    command, at, env = transport.argv(
        ["sh", "-c", PUSH_SCRIPT, "mngr", "1" if request.delete else "0", dest]
    )
    stdio = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    with _process(command, cwd=at, env=env, **stdio) as proc:
        errors = _drain(proc.stderr)
        code, said = _read_probe(transport, proc)
        method, cwd = _method(transport, request.method, [], code, said, errors.text)
        started = time.monotonic()
        result = TransferResult(transport.host.ref, "push", method)
        if method == RSYNC:
            assert proc.stdin is not None
            proc.stdin.close()  # the host's process ends
            _rsync(transport, sources, f":{dest}/", exclude, request, result)
        else:
            _push_tar(transport, proc, sources, dest, exclude, request, result, cwd)
        proc.wait()
    if proc.returncode != 0:
        raise MngrError(f"push failed: {_shown(_last_line(errors.text()))}")
    result.seconds = time.monotonic() - started
    return result


def pull(transport: Transport, request: Request) -> TransferResult:
    if not request.sources:
        raise UsageError("no source given")
    sources = [_host_path(s) for s in request.sources]
    _check_patterns(request.exclude)
    dest = Path(os.path.abspath(request.dest or "."))
    _check_method(request.method)
    probe = transport.run(["sh", "-c", PROBE_SCRIPT, "mngr", "", *sources])
    said = probe.stdout.decode(errors="surrogateescape")
    method, cwd = _method(
        transport, request.method, sources, probe.returncode, said, lambda: probe.stderr
    )
    started = time.monotonic()
    result = TransferResult(transport.host.ref, "pull", method)
    _make_folder(dest)
    if method == RSYNC:
        remote = [f":{s}" for s in sources]
        _rsync(transport, remote, str(dest), list(request.exclude), request, result)
    else:
        _pull_tar(transport, sources, cwd, dest, request, result)
    result.seconds = time.monotonic() - started
    return result


def _local_source(path: str) -> str:
    """The source as an absolute path (rsync never takes `/a:b` for a host), ending in `/.`
    when it names a folder's contents."""
    if not path:
        raise UsageError("an empty source path")
    if not os.path.lexists(path):
        raise NotFoundError(f"no such file or folder: {_shown(path)}")
    absolute = os.path.abspath(path)
    return f"{absolute}/." if _contents(path) else absolute


def _contents(path: str) -> bool:
    """Does this path name a folder's contents (its last part `.` or `..`)?"""
    return path.rstrip("/").rsplit("/", 1)[-1] in (".", "..", "")


def _host_path(path: str) -> str:
    """A path on the host that no tool reads as an option (`-x`) or rsync as a module (`:x`)."""
    if not path:
        raise UsageError("an empty path")
    if "\0" in path:
        raise UsageError("a path holds a NUL byte")
    path = path.rstrip("/") or "/"
    return path if path.startswith("/") or path.startswith("./") else f"./{path}"


def _check_patterns(patterns: list[str]) -> None:
    for pattern in patterns:
        if not pattern or "\n" in pattern or "\r" in pattern or "\0" in pattern:
            raise UsageError(f"--exclude {pattern!r}: a pattern must be one non-empty line")


def _check_method(wanted: str | None) -> None:
    if wanted is not None and wanted not in METHODS:
        raise UsageError(f"unknown transfer method {wanted!r}: use rsync or tar")


def _read_probe(transport: Transport, proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The probe's lines from the host's push process, which then waits for a word on its
    stdin: (0, the lines), or (its exit code, what it said) when it ended first."""
    assert proc.stdout is not None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _end(proc)

    watch = threading.Timer(_PROBE_TIMEOUT_S, expire)
    watch.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(_CWD.encode()):
                return 0, b"".join(lines).decode(errors="surrogateescape")
    finally:
        watch.cancel()
    proc.wait()
    if expired.is_set():
        raise UnreachableError(
            f"host {transport.host.ref} did not answer within {_PROBE_TIMEOUT_S:g}s"
        )
    return proc.returncode or 1, b"".join(lines).decode(errors="surrogateescape")


def _method(
    transport: Transport,
    wanted: str | None,
    sources: list[str],
    code: int,
    said: str,
    stderr: Callable[[], str | bytes],
) -> tuple[str, str | None]:
    """Which way to transfer, and the host's working folder (None: it did not say), from
    what the probe `said` (and its exit `code`, its `stderr` when it failed), after refusing
    missing host sources."""
    if code == 3:
        raise MngrError(f"push failed: {_shown(_last_line(stderr()))}")
    if code != 0:
        why = _shown(_last_line(stderr()))
        raise UnreachableError(f"cannot reach host {transport.host.ref}: {why}")
    words = said.split("\n")
    missing = [sources[int(w.split()[1]) - 1] for w in words if w.startswith("missing ")]
    if missing:
        raise NotFoundError(
            f"no such file or folder on host {transport.host.ref}: {_shown(missing[0])}"
        )
    both = "rsync" in words and shutil.which("rsync") is not None and _rsh_words() is not None
    if wanted == RSYNC and not both:
        raise UsageError("rsync is not available on both ends (or mngr's path holds a quote)")
    cwd = next((w[len(_CWD) :] for w in words if w.startswith(_CWD)), "")
    return wanted or (RSYNC if both else TAR), cwd if cwd.startswith("/") else None


# --- rsync ------------------------------------------------------------------------------


def _rsh_words() -> str | None:
    """rsync's -e value: this Python running this module, quoted as rsync splits it."""
    python = sys.executable
    if "'" in python or '"' in python:
        return None
    quoted = python if _SAFE_WORD.fullmatch(python) else f"'{python}'"
    return f"{quoted} -m mngr.transfer rsh"


def _rsync(
    transport: Transport,
    sources: list[str],
    dest: str,
    exclude: list[str],
    request: Request,
    result: TransferResult,
) -> None:
    folder = transport.backend.local_folder(transport.host)
    if folder is not None:  # a folder on this machine: plain local rsync, no remote shell
        token, shell = f"{folder}/", []
    else:  # rsync's "host" word, which our rsh checks
        token, shell = transport.host.id, ["-e", _rsh_words() or ""]
    sources = [_on_host(token, s) for s in sources]
    argv = ["rsync", *RSYNC_OPTIONS, *shell]
    argv += ["--delete"] if request.delete else []
    argv += [f"--exclude={p}" for p in exclude]
    argv += ["--info=progress2"] if request.progress else []
    argv += [*sources, _on_host(token, dest)]
    env = {**os.environ, **transport.rsh_env(), "LC_ALL": "C"}
    stats: dict[str, int] = {}
    with _process(argv, env=env, stdout=subprocess.PIPE) as proc:
        errors = _drain(proc.stderr)
        assert proc.stdout is not None
        for line in _lines(proc.stdout):
            if request.progress and (m := re.match(r"\s*(\d+)\s+\d+%", line)):
                request.progress(int(m.group(1)))
            elif m := re.match(r"Total bytes (sent|received): (\d+)", line):
                stats[m.group(1)] = int(m.group(2))
        proc.wait()
    if proc.returncode != 0:
        raise MngrError(f"{result.direction} failed: {_rsync_error(errors.text())}")
    result.sent, result.received = stats.get("sent", 0), stats.get("received", 0)


def _on_host(token: str, path: str) -> str:
    """`:PATH` (a path on the host) as rsync names it: `TOKEN:PATH`, or, for a host folder on
    this machine, PATH joined to that folder (an absolute PATH stays itself, as in exec)."""
    if not path.startswith(":"):
        return path
    if token.endswith("/"):
        return os.path.join(token, path[1:])
    return f"{token}{path}"


def _rsync_error(stderr: str) -> str:
    """rsync's first line that says what went wrong, without its `rsync: [Receiver]` prefix."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    wanted = [line for line in lines if not line.startswith("rsync error:")] or lines
    line = wanted[0] if wanted else "rsync failed"
    return _shown(re.sub(r"^rsync: (\[\w+\] )?", "", line))


def _lines(stream: IO[bytes]) -> Iterator[str]:
    """rsync's output split at newlines and at the carriage returns of its progress line."""
    pending = b""
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        pending += chunk
        *whole, pending = re.split(rb"[\r\n]", pending)
        for line in whole:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def rsh_main(argv: list[str]) -> int:
    """rsync's remote shell: `rsh HOST rsync --server ...` becomes the host's transport."""
    from mngr.records import Host
    from mngr.registry import load_backend
    from mngr.runner import Runner

    spec = json.loads(os.environ.get(TRANSPORT_ENV, "null") or "null")
    if not spec or len(argv) < 3 or argv[1] != "rsync":
        sys.stderr.write("mngr rsh: run only by mngr's push and pull\n")
        return 2
    host = Host.model_validate(spec["host"])
    words = argv[1:]
    if argv[0] != host.id or not all(_SAFE_WORD.fullmatch(w) for w in words):
        sys.stderr.write("mngr rsh: refusing an unexpected remote command\n")
        return 2
    try:
        cls = load_backend(spec["backend"])
        backend = cls(cls.config_model.model_validate(spec["config"]), Runner())
        command = backend.exec_command(host, words)
    except MngrError as exc:
        sys.stderr.write(f"mngr rsh: {exc}\n")
        return 1
    if command.cwd:
        os.chdir(command.cwd)
    os.execvpe(command.argv[0], command.argv, {**os.environ, **command.env})


# --- tar --------------------------------------------------------------------------------


def _push_tar(
    transport: Transport,
    proc: subprocess.Popen[bytes],
    sources: list[str],
    dest: str,
    exclude: list[str],
    request: Request,
    result: TransferResult,
    cwd: str | None,
) -> None:
    """Tell the host's push process (PUSH_SCRIPT) how the archive comes, then send it."""
    native = cwd is not None and bool(transport.backend.copy_in_command(transport.host, "-", "/"))
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"native\n" if native else b"tar\n")
        proc.stdin.flush()
    except BrokenPipeError:
        return  # the host's process ended: its error says why
    if not native:
        result.sent = _send_archive(proc.stdin, sources, exclude, request.progress)
        return
    assert cwd is not None
    name = proc.stdout.readline().decode(errors="replace").strip()
    try:
        if name.startswith(".mngr-push."):
            folder = posixpath.join(cwd, dest, name)
            result.sent = _copy_in(transport, folder, sources, exclude, request)
            with suppress(BrokenPipeError):
                proc.stdin.write(f"{MARKER}\n".encode())  # every copy is complete
                proc.stdin.flush()
    finally:  # the script goes on: it places what came, or removes its folder
        with suppress(BrokenPipeError):
            proc.stdin.close()
        proc.wait()


def _copy_in(
    transport: Transport, folder: str, sources: list[str], exclude: list[str], request: Request
) -> int:
    """The sources into `folder` in the host by the backend's own copy commands: each by its
    path into folder/p (the vendor tool reads the files itself: a pipe between it and us cost
    15% of a 200 MB push), or, when patterns leave files out or progress is wanted, as one
    archive; the bytes sent."""
    backend, host = transport.backend, transport.host
    if not exclude and request.progress is None:
        for source in sources:
            copy = backend.copy_in_command(host, source, f"{folder}/{PAYLOAD}")
            assert copy is not None
            _run_copy(copy, "push")
        return sum(_size(Path(source)) for source in sources)
    command = backend.copy_in_command(host, "-", folder)
    assert command is not None
    env = {**os.environ, **command.env} if command.env else None
    with _process(command.argv, cwd=command.cwd, env=env, stdin=subprocess.PIPE) as proc:
        errors = _drain(proc.stderr)
        assert proc.stdin is not None
        sent = _send_archive(proc.stdin, sources, exclude, request.progress)
        proc.wait()
    if proc.returncode != 0:
        raise MngrError(f"push failed: {_shown(_last_line(errors.text()))}")
    return sent


def _send_archive(
    sink: IO[bytes], sources: list[str], exclude: list[str], progress: Progress | None
) -> int:
    """The sources as a tar archive (each under p/, then the marker) into `sink`, closed
    after; the bytes sent."""
    archive = _Archive(sink, progress)
    try:
        keep = _tar_exclude(exclude, PAYLOAD)
        for source in sources:
            name = os.path.basename(source)
            archive.add(source, PAYLOAD if _contents(source) else f"{PAYLOAD}/{name}", keep)
        archive.header(tarfile.TarInfo(MARKER))
        archive.write(bytes(2 * tarfile.BLOCKSIZE))  # the end of the archive
        sink.close()
    except BrokenPipeError:
        pass  # the host's end stopped reading: its error says why
    except OSError as exc:
        raise MngrError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return archive.count


def _pull_tar(
    transport: Transport,
    sources: list[str],
    cwd: str | None,
    dest: Path,
    request: Request,
    result: TransferResult,
) -> None:
    pairs: list[tuple[str, str]] = []
    for source in sources:
        parent, name = posixpath.split(source)
        if name in ("", ".", ".."):
            parent, name = source, "."
        pairs.append((parent or "/", name))
    tmp = Path(tempfile.mkdtemp(prefix=".mngr-pull.", dir=dest))
    try:
        copies = _copies_out(transport, pairs, cwd, tmp)
        if copies is None:
            words = [word for pair in pairs for word in pair]
            command = transport.argv(["sh", "-c", PULL_TAR_SCRIPT, "mngr", *words])
            result.received = _unpack(command, tmp, request.progress)
            _settle(tmp, request.exclude)
        else:
            _copy_out(copies, tmp, request.progress)
            result.received = _settle(tmp, request.exclude)
        for entry in sorted(tmp.iterdir()):
            _place(entry, dest / entry.name, request.delete, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copies_out(
    transport: Transport, pairs: list[tuple[str, str]], cwd: str | None, tmp: Path
) -> list[Command] | None:
    """The backend's own commands copying each (PARENT, NAME) into tmp (given the absolute
    path); None when it has none (or the host did not say its working folder)."""
    if cwd is None:
        return None
    commands = []
    for parent, name in pairs:
        path = posixpath.join(cwd, parent.removeprefix("./"), name)
        command = transport.backend.copy_out_command(transport.host, path, str(tmp))
        if command is None:
            return None
        commands.append(command)
    return commands


def _copy_out(commands: list[Command], tmp: Path, progress: Progress | None) -> None:
    """Run each copy into tmp; on a terminal, what has arrived so far is the progress."""
    done = threading.Event()
    if progress is not None:

        def watch() -> None:
            while not done.wait(0.25):
                progress(_size(tmp))

        threading.Thread(target=watch, daemon=True).start()
    try:
        for command in commands:
            _run_copy(command, "pull")
    finally:
        done.set()


def _run_copy(command: Command, verb: str) -> None:
    env = {**os.environ, **command.env} if command.env else None
    with _process(command.argv, cwd=command.cwd, env=env) as proc:
        errors = _drain(proc.stderr)
        proc.wait()
    if proc.returncode != 0:
        raise MngrError(f"{verb} failed: {_shown(_last_line(errors.text()))}")


def _size(folder: Path) -> int:
    """The bytes of the files under folder (those being written count as far as they are),
    or of the file itself (a link: none)."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size if stat.S_ISREG(info.st_mode) else 0
    total = 0
    for top, _, files in os.walk(folder):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def _unpack(
    command: tuple[list[str], str | None, dict[str, str] | None],
    tmp: Path,
    progress: Progress | None,
) -> int:
    """Run the command and unpack the archive it writes into tmp with this machine's tar;
    returns the bytes received. Either failing is one MngrError."""
    argv, cwd, env = command
    with (
        _process(argv, cwd=cwd, env=env, stdout=subprocess.PIPE) as source,
        _process([*UNTAR, str(tmp)], stdin=subprocess.PIPE) as sink,
    ):
        errors, refused = _drain(source.stderr), _drain(sink.stderr)
        assert source.stdout is not None and sink.stdin is not None
        count, reader, writer = 0, source.stdout.fileno(), sink.stdin.fileno()
        try:
            while moved := _move(reader, writer):
                count += moved
                if progress is not None:
                    progress(count)
        except BrokenPipeError:
            _end(source)  # our tar stopped reading: its error says why
        sink.stdin.close()
        source.wait()
        sink.wait()
    if source.returncode != 0:
        raise MngrError(f"pull failed: {_shown(_last_line(errors.text()))}")
    if sink.returncode != 0:
        why = _last_line(refused.text()).removeprefix("tar: ")
        raise MngrError(f"pull failed: the host's archive was refused: {_shown(why)}")
    return count


def _move(reader: int, writer: int) -> int:
    """Bytes from one pipe to another, as many as are there (0 at the end): in the kernel
    where it can (Linux's splice), else through a buffer."""
    if hasattr(os, "splice"):
        return os.splice(reader, writer, _CHUNK)
    data = os.read(reader, _CHUNK)
    view = memoryview(data)
    while view:
        view = view[os.write(writer, view) :]
    return len(data)


def _settle(tmp: Path, exclude: list[str]) -> int:
    """What a pull unpacked, before it is placed: entries that `--exclude` names removed, and
    no setuid, setgid or sticky bit kept (as Python's tar filter did); returns the bytes of
    the files kept."""
    total = 0
    for folder, folders, files in os.walk(tmp):
        base = os.path.relpath(folder, tmp)
        for name in [*folders, *files]:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            is_dir = stat.S_ISDIR(info.st_mode)
            if _excluded(exclude, name if base == "." else f"{base}/{name}", is_dir):
                if is_dir:
                    folders.remove(name)
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                continue
            if info.st_mode & 0o7000 and not stat.S_ISLNK(info.st_mode):
                os.chmod(path, stat.S_IMODE(info.st_mode) & 0o777)
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


class _Archive:
    """A tar archive written straight to a pipe: headers made by tarfile, each file's bytes
    moved by the kernel (sendfile, on Linux), not copied through Python (a 200 MB push took
    twice as long through tarfile's own stream)."""

    def __init__(self, sink: IO[bytes], progress: Progress | None) -> None:
        self.fd, self.progress, self.count = sink.fileno(), progress, 0
        if sys.platform == "linux":  # a larger pipe: fewer turns between us and the reader
            import fcntl

            with suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, _CHUNK)
        # Only for its headers: gettarinfo (which also finds hard links) and the encoding.
        self.tar = tarfile.open(fileobj=io.BytesIO(), mode="w", format=tarfile.GNU_FORMAT)

    def add(self, path: str, arcname: str, keep: Callable[..., Any]) -> None:
        """A folder after its contents: a tar that sets a folder's mtime and mode as it meets
        it (busybox) then keeps them, and a read-only folder is filled first."""
        info = self.tar.gettarinfo(path, arcname)
        info = keep(info) if info is not None else None  # None: a socket, not sent
        if info is None:
            return
        if info.isdir():
            for name in sorted(os.listdir(path)):
                self.add(os.path.join(path, name), f"{arcname}/{name}", keep)
            self.header(info)
        elif info.isreg():
            with open(path, "rb") as f:
                self.header(info)
                self._content(f, path, info.size)
        else:
            self.header(info)

    def header(self, info: tarfile.TarInfo) -> None:
        self.write(info.tobuf(tarfile.GNU_FORMAT, self.tar.encoding, self.tar.errors))

    def _content(self, f: IO[bytes], path: str, size: int) -> None:
        left = size
        while left:
            if sys.platform == "linux":
                try:
                    n = os.sendfile(self.fd, f.fileno(), None, min(left, _CHUNK))
                except BrokenPipeError:
                    raise
                except OSError as exc:
                    raise OSError(exc.errno, exc.strerror, path) from None
                self._moved(n)
            else:
                n = self.write(f.read(min(left, _CHUNK)))
            if not n:
                raise MngrError(f"push failed: {_shown(path)} got shorter while it was sent")
            left -= n
        self.write(bytes(-size % tarfile.BLOCKSIZE))

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self._moved(len(data))
        return len(data)

    def _moved(self, n: int) -> None:
        self.count += n
        if self.progress is not None and n:
            self.progress(self.count)


def _tar_exclude(patterns: list[str], prefix: str) -> Callable[[tarfile.TarInfo], Any]:
    """A tarfile filter dropping what `_excluded` names (and what a stream holds under a
    folder it dropped); member names start with `prefix`."""

    dropped: list[str] = []  # folders left out

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        path = member.name
        if prefix:
            path = path[len(prefix) :].lstrip("/")
        path = path.removeprefix("./")
        if not path or path == ".":
            return member
        if any(path.startswith(folder) for folder in dropped):
            return None
        if _excluded(patterns, path, member.isdir()):
            if member.isdir():
                dropped.append(f"{path}/")
            return None
        return member

    return keep


def _excluded(patterns: list[str], path: str, is_dir: bool) -> bool:
    """Does rsync's `--exclude PATTERN` drop this path (from the transfer's root)? A pattern
    without `/` matches any name; with one, the path (`/` anchors it to the root); a trailing
    `/` matches folders only."""
    for pattern in patterns:
        if pattern.endswith("/") and not is_dir:
            continue
        body = pattern.rstrip("/")
        if "/" in body:
            if fnmatchcase(path, body.lstrip("/")) or (
                not body.startswith("/") and fnmatchcase(path, f"*/{body}")
            ):
                return True
        elif fnmatchcase(posixpath.basename(path), body):
            return True
    return False


def _place(src: Path, dst: Path, replace: bool, tmp: Path) -> None:
    """Rename src to dst; a folder onto a folder merges unless `replace` (as PUSH_SCRIPT)."""
    if not replace and _is_dir(src) and _is_dir(dst):
        info = src.stat()
        for child in sorted(src.iterdir()):
            _place(child, dst / child.name, replace, tmp)
        os.chmod(dst, info.st_mode & 0o7777)
        os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns))
        return
    if _is_dir(dst):
        old = tmp / ".old"
        os.rename(dst, old)
        shutil.rmtree(old)
    elif os.path.lexists(dst) and (_is_dir(src) or dst.is_dir()):
        dst.unlink()  # a file or a link (its target left alone) that a folder replaces
    os.replace(src, dst)


def _is_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MngrError(f"cannot write to {_shown(str(path))}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MngrError(f"cannot write to {_shown(str(path))}: permission denied")


# --- processes --------------------------------------------------------------------------


@contextmanager
def _process(argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own session, ended with its whole group if we stop early (Ctrl-C, an
    error): TERM first so rsync removes its temporary file, KILL after a grace period."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    try:
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, start_new_session=True, **kwargs)
    except FileNotFoundError:
        raise VendorMissingError(f"'{argv[0]}' was not found on PATH") from None
    try:
        yield proc
    except KeyboardInterrupt:
        _end(proc)
        raise InterruptedByUser("interrupted") from None
    except BaseException:
        _end(proc)
        raise
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
        if proc.poll() is None:
            _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, _TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        with suppress(OSError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class _Drained(threading.Thread):
    """Reads a child's stderr to the end (so it never blocks on a full pipe), keeping it."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream, self.chunks = stream, []
        self.start()

    def run(self) -> None:
        with suppress(OSError, ValueError):
            while chunk := self.stream.read(65536):
                self.chunks.append(chunk)

    def text(self) -> str:
        self.join(timeout=5)
        return b"".join(self.chunks).decode(errors="replace")


def _drain(stream: IO[bytes] | None) -> _Drained:
    assert stream is not None
    return _Drained(stream)


def _last_line(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def _shown(text: str) -> str:
    """A name or message on one line: control characters (a newline in a name) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["rsh"]:
        sys.exit(rsh_main(sys.argv[2:]))
    sys.stderr.write("usage: python -m mngr.transfer rsh HOST COMMAND...\n")
    sys.exit(2)
