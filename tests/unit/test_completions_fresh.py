"""The committed completion files match the click app (commands, options, backend flags)."""

from __future__ import annotations

import pytest

from mngr import completion_gen
from mngr.create_flags import BackendFlag


def test_committed_completion_files_are_fresh() -> None:
    stale = [str(p.relative_to(completion_gen.REPO)) for p in completion_gen.stale()]
    assert not stale, (
        f"completion files are stale: {', '.join(stale)}; "
        f"regenerate with `{completion_gen.COMMAND}` and commit them "
        "(run `pip install -e .` first if a backend entry point changed)"
    )


def test_tree_holds_builtin_backend_flags_and_leaves_third_party_ones_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mngr import create_flags

    flags = {
        "bk_accel": BackendFlag(
            "bk_accel", "accel", ["--accel", "-g"], "Accelerators to attach.", "value"
        ),
        "bk_odd": BackendFlag("bk_odd", "odd", ["--odd"], "Only elsewhere.", "flag"),
    }
    flags["bk_accel"].backends = ["local"]
    flags["bk_odd"].backends = ["someone-elses"]
    monkeypatch.setattr(create_flags, "collect", lambda: flags)
    try:
        create = completion_gen.tree()["commands"]["host"]["commands"]["create"]
    finally:
        monkeypatch.undo()
        from mngr.cli import build

        build(with_backend_flags=False)
    options = {o["names"][0]: o for o in create["options"]}
    assert options["--accel"]["names"] == ["--accel", "-g"] and options["--accel"]["value"] == ""
    assert options["--accel"]["help"] == "Accelerators to attach"
    assert "--odd" not in options


def test_every_command_of_the_app_is_in_the_tree() -> None:
    tree = completion_gen.tree()

    def paths(node: dict, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        found = {prefix}
        for name, sub in node["commands"].items():
            found |= paths(sub, (*prefix, name))
        return found

    assert {("host", "create"), ("host", "snapshot", "delete"), ("completion",)} <= paths(tree)
