"""Resources a host is created with, owned by core so a flag means one thing everywhere:
`--memory 2g` is 2 GiB on docker and modal alike, and a bare `--memory 2` is refused.

Sizes are binary: k, m, g, t are KiB, MiB, GiB, TiB (`2g`, `2G`, `2GiB` and `2GB` are all
2 GiB). A backend declares which resources it takes (`Backend.takes`) and translates them
into its vendor's terms; the CLI refuses one the chosen backend does not take.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mngr.errors import UsageError

KIB = 1024
UNITS = {"k": KIB, "m": KIB**2, "g": KIB**3, "t": KIB**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt])(?:i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_GPU = re.compile(r"^(all|[1-9][0-9]{0,2}|[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(:[1-9][0-9]{0,2})?)$")

# The names of the resources, as flags and as `Backend.takes` entries.
CPUS, MEMORY, DISK, GPU = "cpus", "memory", "disk", "gpu"
ALL = (CPUS, MEMORY, DISK, GPU)


@dataclass(frozen=True)
class ResourceRequest:
    cpus: float | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    gpu: str | None = None  # a count, "all", or a vendor's spec such as "H100:2"

    def given(self) -> list[str]:
        values = {CPUS: self.cpus, MEMORY: self.memory_bytes, DISK: self.disk_bytes, GPU: self.gpu}
        return [name for name, value in values.items() if value is not None]

    @property
    def memory_mib(self) -> int | None:
        return None if self.memory_bytes is None else math.ceil(self.memory_bytes / KIB**2)

    @property
    def disk_gib(self) -> int | None:
        return None if self.disk_bytes is None else math.ceil(self.disk_bytes / KIB**3)

    @property
    def gpu_count(self) -> int | None:
        """The number of GPUs, when `gpu` says one (`2`, `H100:2`; `A10G` is 1)."""
        if self.gpu is None or self.gpu == "all":
            return None
        if self.gpu.isdigit():
            return int(self.gpu)
        _, _, count = self.gpu.partition(":")
        return int(count) if count else 1

    @property
    def gpu_type(self) -> str | None:
        if self.gpu is None or self.gpu == "all" or self.gpu.isdigit():
            return None
        return self.gpu.partition(":")[0]


def parse_size(text: str, flag: str) -> int:
    """`512m`, `2g`, `2GiB` -> bytes; a bare number is refused (bytes? GiB?)."""
    match = _SIZE.match(text)
    if match is None:
        if re.fullmatch(r"\s*\d+(\.\d+)?\s*", text):
            raise UsageError(
                f"{flag} {text}: give a unit, e.g. {text.strip()}g (GiB) or {text.strip()}m (MiB)"
            )
        raise UsageError(f"{flag} {text!r}: expected a size such as 512m, 2g or 1.5GiB")
    size = float(match.group(1)) * UNITS[match.group(2).lower()]
    if not math.isfinite(size) or size < 1 or size >= 2**63:
        raise UsageError(f"{flag} {text!r}: out of range")
    return int(size)


def size_text(size: int | None) -> str | None:
    """A size in bytes as `parse_size` reads it back exactly (`2097152.0k`)."""
    return None if size is None else f"{size / KIB}k"


def parse_duration(text: str, flag: str = "duration") -> int:
    """`90s`, `30m`, `2h`, `7d`, `1w` -> seconds (gc's `--older-than`, `--idle-timeout`)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise UsageError(f"invalid {flag} {text!r}: use a number and s, m, h, d or w (e.g. 30m)")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def parse_idle_timeout(value: str | int) -> int:
    """`--idle-timeout` and the `idle_timeout` setting -> seconds; `0` (any unit) is never."""
    if value in (0, "0"):
        return 0
    if isinstance(value, bool) or not isinstance(value, str):  # 1800: seconds? minutes?
        raise UsageError(f"invalid idle timeout {value!r}: give a unit, e.g. 30m, 2h or 90s")
    return parse_duration(value, "idle timeout")


def duration_text(seconds: int) -> str:
    """Seconds in the largest unit that divides them: 5400 -> `90m`, 7200 -> `2h`."""
    for unit in "wdhm":
        if seconds and seconds % _SECONDS[unit] == 0:
            return f"{seconds // _SECONDS[unit]}{unit}"
    return f"{seconds}s"


def parse_cpus(text: str | float) -> float:
    try:
        cpus = float(text)
    except ValueError:
        raise UsageError(f"--cpus {text!r}: expected a number such as 2 or 0.5") from None
    if not math.isfinite(cpus) or cpus <= 0 or cpus > 4096:
        raise UsageError(f"--cpus {text!r}: expected a number greater than 0 (at most 4096)")
    return cpus


def parse_gpu(text: str) -> str:
    if not _GPU.match(text):
        raise UsageError(
            f"--gpu {text!r}: expected a count (1, 2), 'all', or a GPU type with an optional "
            "count (A10G, H100:2)"
        )
    return text


def parse(
    *,
    cpus: str | float | None = None,
    memory: str | None = None,
    disk: str | None = None,
    gpu: str | None = None,
) -> ResourceRequest:
    return ResourceRequest(
        cpus=None if cpus is None else parse_cpus(cpus),
        memory_bytes=None if memory is None else parse_size(memory, "--memory"),
        disk_bytes=None if disk is None else parse_size(disk, "--disk"),
        gpu=None if gpu is None else parse_gpu(gpu),
    )
