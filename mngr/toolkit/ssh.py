"""One ssh argv for every backend that reaches hosts over ssh (the pool, aws): host keys are
always checked (never `StrictHostKeyChecking=no`), batch mode so no prompt can hang a call,
and optional connection reuse."""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
from dataclasses import dataclass

from mngr.errors import MngrError

# ssh splits option values on blanks and expands `%` tokens in file names.
_FILE_FORBIDDEN = frozenset(" \t\r\n\"'%#")


def ssh_file(path: str | None, what: str) -> str | None:
    """A settings validator for a file ssh reads through `-o` (known hosts)."""
    if path is not None and (not path or _FILE_FORBIDDEN & set(path)):
        raise ValueError(f"{what} must be a path without blanks, quotes, '%' or '#'")
    return path


@dataclass(frozen=True)
class SshTarget:
    address: str
    user: str | None = None
    port: int = 22
    identity_file: str | None = None


@dataclass(frozen=True)
class SshSettings:
    binary: str = "ssh"
    known_hosts: str | None = None  # default: the user's ~/.ssh/known_hosts
    accept_new: bool = False  # true: trust a host's first key (accept-new); never "no"
    connect_timeout_s: int = 10
    control_dir: str | None = None  # set: reuse connections (ControlMaster) for this long
    control_persist_s: int = 0

    @property
    def known_hosts_file(self) -> str:
        return os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts")


def options(settings: SshSettings, *, batch: bool = True) -> list[str]:
    opts = [
        f"ConnectTimeout={settings.connect_timeout_s}",
        f"StrictHostKeyChecking={'accept-new' if settings.accept_new else 'yes'}",
        f"UserKnownHostsFile={settings.known_hosts_file}",
        "LogLevel=ERROR",
    ]
    if batch:
        opts.insert(0, "BatchMode=yes")
    if settings.control_dir is not None and settings.control_persist_s > 0:
        opts += [
            "ControlMaster=auto",
            f"ControlPath={settings.control_dir}/%C",
            f"ControlPersist={settings.control_persist_s}",
        ]
    else:
        opts += ["ControlMaster=no", "ControlPath=none"]
    return [word for opt in opts for word in ("-o", opt)]


def ssh_argv(
    target: SshTarget,
    settings: SshSettings,
    remote: str | None = None,
    *,
    tty: bool = False,
    batch: bool = True,
) -> list[str]:
    """`ssh OPTIONS [-i KEY] -p PORT [-l USER] -t|-T -- ADDRESS [REMOTE]`."""
    argv = [settings.binary, *options(settings, batch=batch)]
    if target.identity_file:
        argv += ["-i", os.path.expanduser(target.identity_file), "-o", "IdentitiesOnly=yes"]
    argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    argv += ["-t" if tty else "-T", "--", target.address]
    if remote is not None:
        argv.append(remote)
    return argv


def remote_command(words: list[str], *, detach: bool = False) -> str:
    """The one string ssh hands the remote shell, each word quoted so it arrives intact;
    `detach` runs it in the background, its output discarded."""
    command = shlex.join(words)
    return f"nohup {command} >/dev/null 2>&1 </dev/null &" if detach else command


# A socket path must fit in sun_path (108 bytes): dir + "/" + 40 hex (%C) + the 17-char
# temporary suffix ssh binds first.
MAX_CONTROL_DIR = 48


def control_dir() -> str:
    """A private (0700, ours) directory with a short path for ControlMaster sockets."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    candidates = [os.path.join(runtime, "mngr-ssh")] if os.path.isabs(runtime) else []
    candidates += [
        os.path.join(tempfile.gettempdir(), f"mngr-ssh-{os.getuid()}"),
        f"/tmp/mngr-ssh-{os.getuid()}",
    ]
    path = next(c for c in candidates if len(c) <= MAX_CONTROL_DIR)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise MngrError(f"cannot create {path} for ssh control sockets: {exc.strerror}") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise MngrError(
            f"refusing to keep ssh control sockets in {path}: it is not a directory of yours "
            "with mode 0700"
        )
    return path
