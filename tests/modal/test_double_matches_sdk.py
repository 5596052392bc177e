"""The double (fake_sdk/) must not drift from the installed SDK: every SDK call the shim makes
has, in the double, only parameters the real call has (same kind), every parameter the real
call requires, and no **kwargs (an unknown keyword is a TypeError in the SDK, so in the double)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from .conftest import FAKE_SDK

# Every SDK function or method backends/modal_shim.py calls.
SHIM_CALLS = [
    "modal.App.lookup",
    "modal.Image.from_id",
    "modal.Image.from_registry",
    "modal.Image.debian_slim",
    "modal.Sandbox.create",
    "modal.Sandbox.list",
    "modal.Sandbox.from_id",
    "modal.Sandbox.get_tags",
    "modal.Sandbox.set_tags",
    "modal.Sandbox.poll",
    "modal.Sandbox.terminate",
    "modal.Sandbox.snapshot_filesystem",
    "modal.Sandbox.exec",
    "modal.Volume.from_name",
    "modal.Volume.listdir",
    "modal.Volume.read_file",
    "modal.Volume.remove_file",
    "modal.Volume.batch_upload",
    "modal.Dict.from_name",
    "modal.Dict.items",
    "modal.Dict.objects.delete",
    "modal.experimental.image_delete",
    "modal.config.Config.get",
]

DUMP = """
import importlib, inspect, json, sys
out = {}
for dotted in sys.argv[1:]:
    module, _, rest = dotted.partition(".")
    parts = rest.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join([module, *parts[: i - 1]]))
            break
        except ImportError:
            continue
    for part in parts[i - 1 :]:
        obj = getattr(obj, part)
    out[dotted] = [
        [p.name, p.kind.name, p.default is not inspect.Parameter.empty]
        for p in inspect.signature(obj).parameters.values()
    ]
print(json.dumps(out))
"""


def _signatures(pythonpath: str | None) -> dict[str, list[list]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", DUMP, *SHIM_CALLS],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def real() -> dict[str, list[list]]:
    return _signatures(None)


@pytest.fixture(scope="module")
def double() -> dict[str, list[list]]:
    return _signatures(str(FAKE_SDK))


def test_the_two_sides_are_the_installed_sdk_and_the_double(real, double) -> None:
    sdk = importlib.import_module("modal")
    assert "fake_sdk" not in (sdk.__file__ or "")
    assert real.keys() == double.keys() == set(SHIM_CALLS)


@pytest.mark.parametrize("call", SHIM_CALLS)
def test_the_double_has_the_sdks_signature(call, real, double) -> None:
    bound = {"self", "cls"}  # the SDK's wrappers show them for some methods
    theirs = {name: (kind, opt) for name, kind, opt in real[call] if name not in bound}
    ours = {name: (kind, opt) for name, kind, opt in double[call] if name not in bound}
    assert "VAR_KEYWORD" not in {kind for kind, _ in ours.values()}, "swallows unknown keywords"
    for name, (kind, _) in ours.items():
        assert name in theirs, f"{call}: the SDK has no parameter {name!r}"
        assert theirs[name][0] == kind, f"{call}: {name!r} is {theirs[name][0]} in the SDK"
    required = {n for n, (kind, optional) in theirs.items() if not optional and "VAR" not in kind}
    assert required <= ours.keys(), f"{call}: the double lacks {required - ours.keys()}"


def test_an_unknown_keyword_is_a_type_error_in_the_double() -> None:
    env = dict(os.environ, PYTHONPATH=str(FAKE_SDK))
    code = "import modal; modal.Sandbox.create('sh', app=None, no_such_option=1)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "TypeError" in done.stderr and "no_such_option" in done.stderr
