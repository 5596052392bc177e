from __future__ import annotations

import pytest

from mngr.errors import UsageError
from mngr.names import check_host_name, new_host_id, parse_tag, parse_tags, split_host_ref

BAD_NAMES = ["Web", "web 1", "a;b", "$(id)", "..", "a/b", "x" * 64, "", "-lead", "a.b", "a_b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_host_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid host name"):
        check_host_name(name)


@pytest.mark.parametrize("name", ["a", "web-1", "0abc", "x" * 63])
def test_good_host_names_pass(name: str) -> None:
    assert check_host_name(name) == name


def test_host_id_shape() -> None:
    host_id = new_host_id()
    assert host_id.startswith("host-") and len(host_id) == 37
    assert split_host_ref(host_id) == (host_id, None)


def test_host_ref_with_provider() -> None:
    assert split_host_ref("web.my-aws") == ("web", "my-aws")
    with pytest.raises(UsageError):
        split_host_ref("Web.x")


def test_tag_value_keeps_equals_commas_spaces_and_unicode() -> None:
    assert parse_tag("note=a=b, c d ü") == ("note", "a=b, c d ü")
    assert parse_tags(["a=1", "b="]) == {"a": "1", "b": ""}


@pytest.mark.parametrize("text", ["novalue", "=x", "bad key=1", "mngr.id=1"])
def test_bad_tags_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_tag(text)


def test_a_trailing_newline_is_not_part_of_a_valid_name_or_tag_key() -> None:
    from mngr.names import check_provider_name, check_tag

    for check in (check_host_name, check_provider_name, lambda s: check_tag(s, "v")):
        with pytest.raises(UsageError):
            check("web\n")


def test_a_tag_given_twice_with_different_values_is_refused() -> None:
    assert parse_tags(["a=1", "a=1"]) == {"a": "1"}
    with pytest.raises(UsageError, match="given twice"):
        parse_tags(["a=1", "a=2"])


def test_install_hint_follows_how_mngr_was_installed(monkeypatch, tmp_path) -> None:
    import sys

    from mngr import paths

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    assert paths.install_hint("server") == "pip install 'mngr[server]'"
    venv = tmp_path / "mngr" / "venv"
    venv.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(venv))
    assert paths.install_hint("server").startswith("./install.sh --with server")
