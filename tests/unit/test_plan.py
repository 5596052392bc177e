from __future__ import annotations

import sys
import threading
import time

import pytest

from mngr.backend import ProviderConfig
from mngr.errors import ConflictError, InterruptedByUser, MngrError
from mngr.plan import Plan, Ref, Step, execute
from mngr.runner import CANCELLED, Command, Runner
from tests.support.fake_backend import FakeBackend


def backend() -> FakeBackend:
    return FakeBackend(ProviderConfig.model_construct(name="t", backend="fakecli"), Runner())


def action(log: list[str], text: str, fail: BaseException | None = None) -> Step:
    def run(ctx: dict) -> None:
        log.append(text)
        if fail:
            raise fail

    return Step(text, action=run)


def test_failed_step_undoes_earlier_steps_newest_first() -> None:
    log: list[str] = []
    a = action(log, "a")
    a.undo = action(log, "undo a")
    b = action(log, "b")
    b.undo = action(log, "undo b")
    c = action(log, "c", fail=MngrError("boom"))
    with pytest.raises(MngrError, match="boom"):
        execute(Plan([a, b, c]), backend())
    assert log == ["a", "b", "c", "undo b", "undo a"]


def test_failing_step_with_undo_if_failed_is_undone_but_never_on_conflict() -> None:
    log: list[str] = []
    step = action(log, "run", fail=MngrError("half made"))
    step.undo, step.undo_if_failed = action(log, "cleanup"), True
    with pytest.raises(MngrError):
        execute(Plan([step]), backend())
    assert log == ["run", "cleanup"]
    log.clear()
    step = action(log, "run", fail=ConflictError("exists"))
    step.undo, step.undo_if_failed = action(log, "cleanup"), True
    with pytest.raises(ConflictError):
        execute(Plan([step]), backend())
    assert log == ["run"]


def test_undo_failure_is_reported_not_hidden() -> None:
    log: list[str] = []
    a = action(log, "a")
    a.undo = action(log, "undo a", fail=MngrError("cannot"))
    with pytest.raises(MngrError, match="could not undo: undo a"):
        execute(Plan([a, action(log, "b", fail=MngrError("boom"))]), backend())


def test_refs_are_filled_from_parsed_context_and_shown_as_placeholders() -> None:
    script = "import sys; print(sys.argv[1])"
    first = Step(
        "make",
        command=Command([sys.executable, "-c", "print('i-123')"]),
        parse=lambda out, ctx: ctx.update(instance_id=out.strip()),
    )
    second = Step(
        "use",
        command=Command([sys.executable, "-c", script, Ref("instance_id")]),
        parse=lambda out, ctx: ctx.update(seen=out.strip()),
    )
    plan = Plan([first, second], finish=lambda ctx: ctx["seen"])
    assert plan.render()[1].endswith("'<instance_id>'")
    assert execute(plan, backend()) == "i-123"


def test_interrupt_during_a_step_runs_the_undo() -> None:
    log: list[str] = []
    a = action(log, "allocated")
    a.undo = action(log, "released")
    slow = Step("slow", command=Command([sys.executable, "-c", "import time; time.sleep(30)"]))
    threading.Timer(0.3, CANCELLED.set).start()
    start = time.monotonic()
    with pytest.raises(InterruptedByUser):
        execute(Plan([a, slow]), backend())
    assert log == ["allocated", "released"]
    assert time.monotonic() - start < 5


def test_a_provider_never_reached_is_not_reported_as_a_leftover() -> None:
    from mngr.errors import UnreachableError, VendorTimeoutError

    for error, leftover in (
        (UnreachableError("daemon down"), False),
        (VendorTimeoutError("no answer"), True),
    ):
        log: list[str] = []
        step = action(log, "run", fail=error)
        step.undo, step.undo_if_failed = action(log, "rm", fail=UnreachableError("down")), True
        with pytest.raises(UnreachableError) as exc:
            execute(Plan([step]), backend())
        assert log == ["run", "rm"]  # the undo is still tried
        assert ("could not undo" in str(exc.value)) is leftover


def counter(path) -> Command:
    """A real process that counts its calls in a file and prints the count."""
    script = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "n = int(p.read_text() or 0) + 1 if p.exists() else 1; p.write_text(str(n)); print(n)"
    )
    return Command([sys.executable, "-c", script, str(path)])


def test_a_polled_step_repeats_its_command_until_done_and_is_rendered_as_a_wait(tmp_path) -> None:
    from mngr.plan import Poll

    step = Step(
        "wait until three",
        command=counter(tmp_path / "n"),
        poll=Poll(lambda out, ctx: int(out) == 3, timeout_s=30, delays_s=(0.0,)),
    )
    execute(Plan([step]), backend())
    assert (tmp_path / "n").read_text() == "3"
    assert step.render().startswith("# wait until three: poll ")
    assert step.render().endswith("(at most 30s)")


def test_a_poll_that_never_ends_times_out_naming_the_setting_and_runs_the_undo(tmp_path) -> None:
    from mngr.errors import VendorTimeoutError
    from mngr.plan import Poll

    log: list[str] = []
    made = action(log, "made")
    made.undo = action(log, "undone")
    never = Poll(lambda out, ctx: False, timeout_s=0.2, delays_s=(0.05,), hint="wait_timeout_s")
    wait = Step("wait for ever", command=counter(tmp_path / "n"), poll=never)
    with pytest.raises(VendorTimeoutError, match=r"wait for ever: gave up after 0.2s \(wait_t"):
        execute(Plan([made, wait]), backend())
    assert log == ["made", "undone"]


def test_expand_runs_sub_steps_built_from_what_earlier_steps_found(tmp_path) -> None:
    deleted = tmp_path / "deleted"
    deleted.mkdir()
    find = Step(
        "find",
        command=Command([sys.executable, "-c", "print('a b')"]),
        parse=lambda out, ctx: ctx.update(found=out.split()),
    )
    each = Step(
        "delete each",
        expand=lambda ctx: [
            Step(f"delete {name}", command=counter(deleted / name)) for name in ctx["found"]
        ],
    )
    assert Plan([find, each]).render()[1] == "# delete each"
    execute(Plan([find, each]), backend())
    assert sorted(p.name for p in deleted.iterdir()) == ["a", "b"]


def test_a_progress_line_names_each_unfinished_job_and_its_step() -> None:
    import time

    from mngr.config import Settings
    from mngr.engine import Engine
    from mngr.plan import Plan, Step

    seen: list[tuple[list[str], float]] = []
    engine = Engine(Settings({}, "local", []), jobs=2)
    engine.waiting = lambda pending, seconds: seen.append((list(pending), seconds))
    slow = Plan(
        [Step("make it", action=lambda ctx: None), Step("wait", action=lambda ctx: time.sleep(0.5))]
    )
    fast = Plan([Step("quick", action=lambda ctx: None)])
    outcomes = engine.run_plans([(None, slow), (None, fast)], ["a.p", "b.p"])  # type: ignore[list-item]
    assert [o.error for o in outcomes] == [None, None]
    assert any(pending == ["a.p: wait"] for pending, _ in seen), seen[:5]
    assert seen[-1][0] == []  # the line clears itself at the end
