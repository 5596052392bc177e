"""push / pull with a host of a real sshd pool on loopback: rsync over mngr's ssh transport
(rsync is on both ends) and the tar stream, with the same tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from mngr.errors import MngrError, NotFoundError
from tests.support.trees import describe, differences, make_tree, round_trip

pytestmark = pytest.mark.sshd


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "tree")


@pytest.fixture
def service(sshd_pool, mngr):  # noqa: ANN001, ANN201
    sshd_pool(1)
    assert mngr("host", "create", "h", "-p", "pool").exit_code == 0
    from mngr import config
    from mngr.service import Service

    return Service(config.load(None))


@pytest.mark.parametrize("method", ["rsync", "tar"])
def test_push_and_pull_keep_the_tree(service, tree: Path, tmp_path: Path, method: str) -> None:  # noqa: ANN001
    round_trip(service, "h", tree, tmp_path / "back", method)
    on_host = Path(service.resolve_host("h").address["dir"]) / "in dir" / tree.name
    assert not differences(describe(tree), describe(on_host))
    assert [p.name for p in on_host.parent.iterdir()] == [tree.name]


def test_rsync_is_chosen_and_a_re_push_sends_almost_nothing(service, tree: Path) -> None:  # noqa: ANN001
    first = service.push("h", [str(tree)])
    again = service.push("h", [str(tree)])
    assert first.method == again.method == "rsync"
    assert first.sent > 50 * 2**20 and again.sent < 100_000, again


def test_failures_are_one_line(service, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "a").write_text("a")
    with pytest.raises(NotFoundError, match="on host h.pool: ./gone"):
        service.pull("h", ["gone"], str(tmp_path / "back"))
    service.push("h", [str(tmp_path / "a")], ".")  # a file `a` in the host's folder
    for method in ("rsync", "tar"):
        with pytest.raises(MngrError, match="push failed: .*Not a directory") as error:
            service.push("h", [str(tmp_path / "a")], "a/under", method=method)
        assert "\n" not in str(error.value)
