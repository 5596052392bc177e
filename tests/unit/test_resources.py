"""Core-owned resources: one meaning for --cpus, --memory, --disk and --gpu everywhere."""

from __future__ import annotations

import pytest

from mngr import resources
from mngr.errors import UsageError


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 2**20), ("2g", 2 * 2**30), ("2G", 2 * 2**30), ("2GiB", 2 * 2**30),
     ("2gb", 2 * 2**30), ("1.5g", 3 * 2**29), ("1t", 2**40), ("64k", 64 * 1024)],
)  # fmt: skip
def test_sizes_are_binary_units(text: str, size: int) -> None:
    assert resources.parse_size(text, "--memory") == size


def test_a_bare_number_is_refused_with_a_hint() -> None:
    with pytest.raises(UsageError, match=r"--memory 2: give a unit, e.g. 2g \(GiB\) or 2m"):
        resources.parse_size("2", "--memory")


@pytest.mark.parametrize("text", ["", "g", "-1g", "2x", "nan", "1e999g", "0g", "2 g b"])
def test_nonsense_sizes_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        resources.parse_size(text, "--disk")


@pytest.mark.parametrize("text", ["inf", "nan", "1e999", "0", "-1", "x", "5000"])
def test_cpus_must_be_a_sensible_positive_number(text: str) -> None:
    with pytest.raises(UsageError, match="--cpus"):
        resources.parse_cpus(text)


def test_gpu_takes_a_count_all_or_a_vendor_spec() -> None:
    parsed = resources.parse(gpu="H100:2", memory="1g", cpus="0.5", disk="20g")
    assert (parsed.gpu_type, parsed.gpu_count) == ("H100", 2)
    assert (parsed.memory_mib, parsed.disk_gib, parsed.cpus) == (1024, 20, 0.5)
    assert resources.parse(gpu="2").gpu_count == 2 and resources.parse(gpu="A10G").gpu_count == 1
    assert resources.parse(gpu="all").gpu_count is None
    assert parsed.given() == ["cpus", "memory", "disk", "gpu"]
    for bad in ("--privileged", "H100:0", "a b", "H100:2:3"):
        with pytest.raises(UsageError, match="--gpu"):
            resources.parse_gpu(bad)
