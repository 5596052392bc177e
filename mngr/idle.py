"""Idle stop: a host with no activity for its idle timeout stops itself, mngr not running.

A small watcher runs inside the host (the container's first process on docker; a systemd
unit installed by user data on aws): a POSIX sh script, so any image with `sh`, `date` and
`grep` (busybox is enough) can run it. Every POLL seconds it asks "is the host in use?" and
stops the host once it has not been for TIMEOUT seconds. In use means:

- a process other than the watcher's own runs: an exec or shell session, a forwarded
  connection (each is a process in the host), a push or pull, a provisioning run, or a
  process the user started (`exec --detach`) that is still running. On a machine (aws)
  only processes of login users (uid >= 1000) count, not the system's own daemons;
- or `mngr host touch` wrote the time into TOUCHED since (mngr writes it too before each
  exec, shell, push, pull and forward, so a command shorter than POLL still counts).

The watcher writes the last time the host was in use (epoch seconds) to LAST_ACTIVITY,
which is how `host list` reads `last_activity_at` where the backend can (docker: the
container's health check prints it).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

STATE_DIR = "/tmp/.mngr-idle"
TOUCHED = f"{STATE_DIR}/touched"
LAST_ACTIVITY = f"{STATE_DIR}/last-activity"
# The command that reads the last activity (docker's health check). The watcher does not
# count it as activity: it recognises it by LAST_ACTIVITY in its command line.
READ_LAST_ACTIVITY = f"cat {LAST_ACTIVITY}"
# `mngr host touch`, and what mngr runs before each exec, shell, push, pull and forward.
TOUCH_ARGV = ["sh", "-c", f"mkdir -p {STATE_DIR} 2>/dev/null; date +%s > {TOUCHED}"]
# Where a machine's user data installs the watcher (aws).
WATCHER_PATH = "/usr/local/sbin/mngr-idle"
UNIT_PATH = "/etc/systemd/system/mngr-idle.service"
# Tests set this to poll faster than the default (timeout / 10, between 1s and 60s).
POLL_ENV = "MNGR_IDLE_POLL_S"

# $1 timeout, $2 poll, $3 the lowest uid that counts, $4 what ends the host.
WATCHER = r"""
t=$1 poll=$2 min_uid=$3 stop=$4 d=STATE_DIR
mkdir -p "$d" && chmod 1777 "$d"
last=$(date +%s)
echo "$last" > "$d/last-activity"
in_use() {
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    case $p in 1|$$) continue ;; esac
    { read -r st < "/proc/$p/stat"; } 2>/dev/null || continue
    set -- ${st##*") "}
    case $1 in Z|X) continue ;; esac
    [ "$2" = "$$" ] && continue
    if [ "$min_uid" -gt 0 ]; then
      uid=
      while read -r key a _; do
        [ "$key" = Uid: ] && uid=$a && break
      done 2>/dev/null < "/proc/$p/status"
      [ -n "$uid" ] && [ "$uid" -ge "$min_uid" ] || continue
      { read -r comm < "/proc/$p/comm"; } 2>/dev/null
      case $comm in systemd|"(sd-pam)") continue ;; esac
    fi
    grep -qF "$d/last-activity" "/proc/$p/cmdline" 2>/dev/null && continue
    return 0
  done
  return 1
}
while :; do
  sleep "$poll"
  now=$(date +%s)
  in_use && last=$now
  touched=
  { read -r touched < "$d/touched"; } 2>/dev/null
  case $touched in ''|*[!0-9]*) ;; *) [ "$touched" -gt "$last" ] && last=$touched ;; esac
  echo "$last" > "$d/last-activity"
  [ $((now - last)) -ge "$t" ] && break
done
exec $stop
""".replace("STATE_DIR", STATE_DIR).strip()


def poll_s(timeout_s: int) -> int:
    """How often the watcher looks: a tenth of the timeout, between 1s and 60s."""
    given = os.environ.get(POLL_ENV, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return min(60, max(1, timeout_s // 10))


def watcher_argv(timeout_s: int, *, min_uid: int = 0, stop: str = "true") -> list[str]:
    """`sh -c WATCHER` with its arguments: it returns (running `stop`) once the host has been
    idle for `timeout_s`."""
    return ["sh", "-c", WATCHER, "mngr-idle", str(timeout_s), str(poll_s(timeout_s)),
            str(min_uid), stop]  # fmt: skip


def boot_script(timeout_s: int) -> str:
    """User data for a machine (aws): installs the watcher as a systemd unit that powers the
    machine off once idle, started now and at every boot (so a restarted host keeps its
    timeout). Only processes of login users (uid >= 1000) count as activity there."""
    unit = (
        "[Unit]\nDescription=mngr idle stop\n"
        f"[Service]\nExecStart={WATCHER_PATH} {timeout_s} {poll_s(timeout_s)} 1000 poweroff\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    return (
        "#!/bin/sh\n"
        f"cat > {WATCHER_PATH} <<'MNGR_IDLE_WATCHER'\n#!/bin/sh\n{WATCHER}\nMNGR_IDLE_WATCHER\n"
        f"chmod 755 {WATCHER_PATH}\n"
        f"cat > {UNIT_PATH} <<'MNGR_IDLE_UNIT'\n{unit}MNGR_IDLE_UNIT\n"
        "systemctl daemon-reload\n"
        "systemctl enable --now mngr-idle.service\n"
    )


def epoch_text(text: str | None) -> str | None:
    """Epoch seconds (what the watcher writes) as UTC ISO 8601, or None."""
    text = (text or "").strip()
    if not text.isdigit():
        return None
    return datetime.fromtimestamp(int(text), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
