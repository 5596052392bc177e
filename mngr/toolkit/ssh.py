"""One ssh argv for every backend that reaches hosts over ssh (the pool, aws): host keys are
always checked (never `StrictHostKeyChecking=no`), batch mode so no prompt can hang a call,
and optional connection reuse."""

from __future__ import annotations

import os
import re
import shlex
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    # A master of one mngr process's own (`host forward`): its socket, and whether this
    # command is that master (ssh -M -N) or a client of it.
    control_path: str | None = None
    control_master: bool = False

    @property
    def known_hosts_file(self) -> str:
        return os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts")

    @property
    def strict_host_key_checking(self) -> str:
        return "accept-new" if self.accept_new else "yes"


@dataclass(frozen=True)
class SshEndpoint:
    """A host's own ssh address and how mngr checks its key: what `host ssh-config` writes
    and `host forward` tunnels through."""

    target: SshTarget
    settings: SshSettings

    def record(self) -> dict[str, Any]:
        """The public form, in `host list --format json` as `ssh_endpoint`."""
        identity = self.target.identity_file
        return {
            "host": self.target.address,
            "port": self.target.port,
            "user": self.target.user,
            "identity_file": os.path.expanduser(identity) if identity else None,
            "known_hosts": self.settings.known_hosts_file,
            "strict_host_key_checking": self.settings.strict_host_key_checking,
        }


def options(settings: SshSettings, *, batch: bool = True) -> list[str]:
    opts = [
        f"ConnectTimeout={settings.connect_timeout_s}",
        f"StrictHostKeyChecking={settings.strict_host_key_checking}",
        f"UserKnownHostsFile={settings.known_hosts_file}",
        "LogLevel=ERROR",
    ]
    if batch:
        opts.insert(0, "BatchMode=yes")
    if settings.control_path is not None:
        master = "yes" if settings.control_master else "no"
        opts += [f"ControlMaster={master}", f"ControlPath={settings.control_path}"]
    elif settings.control_dir is not None and settings.control_persist_s > 0:
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
    flags: Sequence[str] = (),
) -> list[str]:
    """`ssh OPTIONS [-i KEY] -p PORT [-l USER] [FLAGS] -t|-T -- ADDRESS [REMOTE]`."""
    argv = [settings.binary, *options(settings, batch=batch)]
    if target.identity_file:
        argv += ["-i", os.path.expanduser(target.identity_file), "-o", "IdentitiesOnly=yes"]
    argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    argv += [*flags, "-t" if tty else "-T", "--", target.address]
    if remote is not None:
        argv.append(remote)
    return argv


# A value in an ssh_config stanza: no blank, quote, '#', '=', '%' (a token), control
# character or leading '-', so a value from settings or vendor output cannot add a line or
# an option.
_CONFIG_VALUE = re.compile(r"[\w.@:/~+,][\w.@:/~+,-]*")


def config_stanza(aliases: Sequence[str], endpoint: SshEndpoint) -> str:
    """A `Host` block of ssh_config for `endpoint`, named by `aliases`; ValueError names the
    value that cannot be written safely."""
    record = endpoint.record()
    lines = [("Host", " ".join(aliases))]
    lines += [
        ("HostName", record["host"]),
        ("Port", str(record["port"])),
        ("User", record["user"]),
        ("IdentityFile", record["identity_file"]),
        ("IdentitiesOnly", "yes" if record["identity_file"] else None),
        ("UserKnownHostsFile", record["known_hosts"]),
        ("StrictHostKeyChecking", record["strict_host_key_checking"]),
    ]
    for key, value in lines:
        words = value.split(" ") if key == "Host" else [value]
        if value is not None and not all(_CONFIG_VALUE.fullmatch(w) for w in words):
            raise ValueError(f"its {key} {value!r} cannot be written into an ssh config safely")
    body = "".join(f"    {key} {value}\n" for key, value in lines[1:] if value is not None)
    return f"Host {lines[0][1]}\n{body}"


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
