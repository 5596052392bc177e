"""Odd settings, names and faults found by adversarial QA: each gives one clear line and the
right exit code, and leaves nothing half-made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan"])
def test_timeout_must_be_a_positive_finite_number(mngr, user_settings: Path, value: str) -> None:
    # A zero or negative timeout made every list of the provider "did not answer within 0s".
    user_settings.write_text(f'[providers.x]\nbackend = "local"\ntimeout_s = {value}\n')
    result = mngr("host", "list", "-p", "x")
    assert result.exit_code == 2
    assert f"{user_settings}:3: provider 'x': timeout_s" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def local_dir(home: Path) -> Path:
    return home / ".local" / "share" / "mngr" / "local" / "local"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("garbage", "unreadable host record"),
        ("[]", "not a JSON object"),
        ("{}", "its name None is not the directory's"),
        ('{"name": "a"}', "id is required"),
        ('{"id": "x", "name": "a", "state": "zzz"}', "state must be one of 'building', "),
        ('{"id": "x", "name": "a", "tags": [1]}', "tags must be a table"),
        ('{"id": "x", "name": "a", "tags": {"k": 1}}', "tags.k must be a string"),
        ('{"id": "x", "name": "zz"}', "its name 'zz' is not the directory's"),
    ],
)
def test_a_damaged_host_record_hides_no_other_host(
    mngr, isolated_home: Path, record: str, expected: str
) -> None:
    # One bad record used to turn the whole provider into an error row (a raw KeyError or a
    # multi-line pydantic dump): no host listed, and no verb could find any host of it.
    assert mngr("host", "create", "a", "b").exit_code == 0
    path = local_dir(isolated_home) / "a" / ".mngr" / "host.json"
    path.write_text(record)
    result = mngr("host", "list")
    assert result.exit_code == 6
    assert result.stdout.splitlines()[1].split()[0] == "b"
    [line] = result.stderr.strip().splitlines()
    assert "provider local: " in line and str(path) in line and expected in line
    assert mngr("host", "destroy", "b", "--yes").exit_code == 0
    refused = mngr("host", "destroy", "a", "--yes")
    assert refused.exit_code == 1 and str(path) in refused.stderr
    assert path.read_text() == record


@pytest.mark.parametrize("meta", ["{}", "[]", '{"id": "snap-1", "name": "n", "host": 5}'])
def test_a_damaged_snapshot_description_hides_no_other_snapshot(
    mngr, isolated_home: Path, meta: str
) -> None:
    assert mngr("host", "create", "a").exit_code == 0
    assert mngr("host", "snapshot", "create", "a", "--name", "good").exit_code == 0
    (local_dir(isolated_home) / ".snapshots" / ("snap-" + "0" * 32 + ".json")).write_text(meta)
    listed = mngr("host", "snapshot", "list", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)["snapshots"]] == ["good"]
    assert mngr("host", "destroy", "a", "--purge", "--yes").exit_code == 0
    assert mngr("host", "snapshot", "list", "-q").stdout == ""


def test_host_directory_without_record_says_so_on_create(mngr, isolated_home: Path) -> None:
    assert mngr("host", "create", "a").exit_code == 0
    (local_dir(isolated_home) / "a" / ".mngr" / "host.json").unlink()
    result = mngr("host", "create", "a")
    assert result.exit_code == 1
    assert "already exists" in result.stderr and "holds no host record" in result.stderr


def test_local_root_that_is_a_file_is_an_error_not_no_hosts(mngr, isolated_home: Path) -> None:
    root = local_dir(isolated_home)
    root.parent.mkdir(parents=True)
    root.write_text("x")
    listed = mngr("host", "list")
    assert listed.exit_code == 6 and f"{root} is not a directory" in listed.stderr
    created = mngr("host", "create", "q")
    assert created.exit_code == 1 and f"{root} is not a directory" in created.stderr
    assert root.read_text() == "x"


def _local_backend_and_host(mngr, name: str):  # noqa: ANN202
    from mngr import config
    from mngr.engine import Engine

    assert mngr("host", "create", name).exit_code == 0
    engine = Engine(config.load())
    return engine.backend("local"), engine.resolve_host(name)


def test_stop_of_a_host_destroyed_meanwhile_writes_no_stub_record(
    mngr, isolated_home: Path
) -> None:
    import shutil

    from mngr.errors import NotFoundError
    from mngr.plan import execute

    backend, host = _local_backend_and_host(mngr, "a")
    plan = backend.stop_plan(host)
    shutil.rmtree(local_dir(isolated_home) / "a")  # another mngr destroyed it
    with pytest.raises(NotFoundError, match="host 'a' no longer exists"):
        execute(plan, backend)
    assert not (local_dir(isolated_home) / "a").exists()


def test_snapshot_of_a_host_destroyed_meanwhile_is_one_clear_error(
    mngr, isolated_home: Path
) -> None:
    import shutil

    from mngr.errors import MngrError
    from mngr.plan import execute

    backend, host = _local_backend_and_host(mngr, "a")
    plan = backend.snapshot_create_plan(host, "s")
    shutil.rmtree(local_dir(isolated_home) / "a")
    # Was "internal error: FileNotFoundError(2, 'No such file or directory')".
    with pytest.raises(MngrError, match=r"^host 'a' no longer exists \(.*/a/\.mngr/host\.json\)$"):
        execute(plan, backend)
    assert not (local_dir(isolated_home) / ".snapshots").exists()  # nothing archived


@pytest.mark.parametrize(
    ("text", "after_add"),
    [
        ("providers = []\n", 'providers = [{name = "n", backend = "local"}]\n'),
        (
            'providers = [{name = "a", backend = "local"}]  # mine\n',
            'providers = [{name = "a", backend = "local"}, {name = "n", backend = "local"}]'
            "  # mine\n",
        ),
        (
            'providers = {a = {backend = "local"}}\n',
            'providers = {a = {backend = "local"},n = {backend = "local"}}\n',
        ),
    ],
)
def test_provider_add_to_inline_providers_writes_valid_toml(
    mngr, user_settings: Path, text: str, after_add: str
) -> None:
    # These used to be written as `providers = [name = "n"\nbackend = "local"\n]`: a settings
    # file every later mngr command refused as invalid TOML.
    user_settings.write_text(text)
    assert mngr("provider", "add", "n", "--backend", "local").exit_code == 0
    assert user_settings.read_text() == after_add
    assert mngr("config", "show").exit_code == 0
    assert mngr("provider", "remove", "n", "--yes").exit_code == 0
    assert mngr("config", "show").exit_code == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('providers = "x"\n', "'providers' must be an array of tables or a table"),
        ("providers = [1, 2]\n", "providers entry 1 must be a table"),
        ('bogus = 1\n[providers.a]\nbackend = "local"\n', "unknown key 'bogus'"),
    ],
)
def test_provider_add_and_remove_refuse_a_file_mngr_would_refuse(
    mngr, user_settings: Path, text: str, expected: str
) -> None:
    # `providers = "x"` was "internal error: AttributeError"; `[1, 2]` was made invalid TOML.
    user_settings.write_text(text)
    for args in (("add", "n", "--backend", "local"), ("remove", "a", "--yes")):
        result = mngr("provider", *args)
        assert result.exit_code == 2
        assert str(user_settings) in result.stderr and expected in result.stderr
        assert user_settings.read_text() == text


def test_provider_remove_finds_a_table_after_an_array_entry(mngr, user_settings: Path) -> None:
    # TOML files `[providers.b]` after `[[providers]]` under that entry; config reads it as
    # provider b, so remove must find it too (it said "no provider 'b'").
    head = '[[providers]]\nname = "a"\nbackend = "local"\n'
    user_settings.write_text(head + '[providers.b]\nbackend = "local"\n')
    assert mngr("provider", "remove", "b", "--yes").exit_code == 0
    assert user_settings.read_text() == head
    assert mngr("config", "show").exit_code == 0


def test_provider_add_keeps_a_bom_and_crlf_line_endings(mngr, user_settings: Path) -> None:
    original = '\ufeff# mine\r\n[providers.k]\r\nbackend = "local"\r\n'
    user_settings.write_bytes(original.encode())
    assert mngr("config", "show").exit_code == 0  # a BOM was "invalid TOML" at line 1
    assert mngr("provider", "add", "n", "--backend", "local").exit_code == 0
    data = user_settings.read_bytes().decode()
    assert data.startswith(original) and "[providers.n]\r\n" in data
    assert "\n" not in data.replace("\r\n", "")
    assert mngr("provider", "remove", "n", "--yes").exit_code == 0
    data = user_settings.read_bytes().decode()
    assert data.startswith(original) and "providers.n" not in data
    assert "\n" not in data.replace("\r\n", "")


def test_provider_add_writes_through_a_symlinked_settings_file(
    mngr, user_settings: Path, isolated_home: Path
) -> None:
    # The link (a dotfiles checkout) used to be replaced by a plain file.
    target = isolated_home / "dotfiles" / "mngr.toml"
    target.parent.mkdir()
    target.write_text("# dotfiles\n")
    user_settings.symlink_to(target)
    assert mngr("provider", "add", "n", "--backend", "local").exit_code == 0
    assert user_settings.is_symlink() and user_settings.resolve() == target
    assert target.read_text().startswith("# dotfiles\n") and 'name = "n"' in target.read_text()


def test_provider_add_through_a_dangling_link_makes_no_folders(
    mngr, user_settings: Path, tmp_path: Path
) -> None:
    user_settings.symlink_to(tmp_path / "gone" / "mngr.toml")
    result = mngr("provider", "add", "n", "--backend", "local")
    assert result.exit_code == 1 and "cannot write settings file" in result.stderr
    assert not (tmp_path / "gone").exists() and user_settings.is_symlink()


def test_unwritable_settings_folder_is_one_line_not_an_internal_error(
    mngr, user_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mngr import settings_file

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(settings_file.tempfile, "mkstemp", denied)
    result = mngr("provider", "add", "n", "--backend", "local")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {user_settings}: cannot write settings file (Permission denied)"
    )


def test_failed_destroy_does_not_read_as_done(
    mngr, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    assert mngr("host", "create", "a").exit_code == 0

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system", "host.json")

    monkeypatch.setattr(shutil, "rmtree", read_only)
    result = mngr("host", "destroy", "a", "--yes")
    assert result.exit_code == 1
    # It said "error: destroyed a.local: remove directory ...".
    assert result.stderr.startswith("error: destroy a.local: remove directory ")
    assert "Read-only file system" in result.stderr


def test_detach_into_an_unwritable_host_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    host = tmp_path / "host"
    host.mkdir()
    (host / ".mngr").write_text("a file where the folder should be")
    result = subprocess.run(
        [sys.executable, "-m", "mngr_backends.local", "detach", str(host), "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot prepare ") and "Traceback" not in result.stderr


def test_config_show_never_prints_a_password_written_into_a_url(mngr, user_settings: Path) -> None:
    user_settings.write_text(
        '[providers.d]\nbackend = "docker"\nhost = "tcp://admin:s3cret@10.0.0.1:2376"\n'
    )
    for args in (("config", "show"), ("config", "show", "-f", "json"), ("provider", "show", "d")):
        result = mngr(*args)
        assert result.exit_code == 2  # refused on load: it would reach argv and `ps`
        assert "s3cret" not in result.stdout + result.stderr
        assert "'host' holds a password inside a URL" in result.stderr


def test_removing_the_default_provider_is_refused(mngr, user_settings: Path) -> None:
    # It used to succeed and leave a file on which every command failed with exit 2.
    text = 'default_provider = "x"\n[providers.x]\nbackend = "local"\n'
    user_settings.write_text(text)
    result = mngr("provider", "remove", "x", "--yes")
    assert result.exit_code == 2
    assert f"provider 'x' is the default_provider in {user_settings}" in result.stderr
    assert user_settings.read_text() == text


def test_a_disabled_default_provider_is_named_with_its_file(mngr, user_settings: Path) -> None:
    user_settings.write_text(
        'default_provider = "off"\n[providers.off]\nbackend = "local"\nenabled = false\n'
    )
    listed = mngr("provider", "list", "-f", "json").json()["providers"]
    assert {p["name"]: p["status"] for p in listed}["off"] == "disabled"  # was "configured"
    result = mngr("host", "create", "a")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: provider 'off' (the default_provider) is disabled "
        f"(enabled = false in {user_settings}:4)"
    )


@pytest.mark.parametrize("value", ["0", '"no"', '"false"'])
def test_enabled_must_be_a_toml_boolean(mngr, user_settings: Path, value: str) -> None:
    # `enabled = 0` passed as false for verbs but counted as enabled by `list` (exit 6).
    user_settings.write_text(f"[providers.local]\nenabled = {value}\n")
    result = mngr("host", "list")
    assert result.exit_code == 2
    assert f"{user_settings}:2: provider 'local': enabled must be true or false" in result.stderr
