from __future__ import annotations

import os
from pathlib import Path

import pytest

from mngr import config
from mngr.errors import ConfigError, NotFoundError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_local_is_always_built_in_and_default(user_settings: Path) -> None:
    settings = config.load()
    assert settings.default_provider == "local"
    assert settings.providers["local"].sources == ["built-in"]


def test_both_forms_are_accepted_and_merge_field_by_field(
    user_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(user_settings, '[[providers]]\nname = "box"\nbackend = "local"\nroot = "/tmp/a"\n')
    project = tmp_path / "work" / ".mngr" / "settings.toml"
    write(project, '[providers.box]\ntimeout_s = 5\n\n[providers.other]\nbackend = "local"\n')
    settings = config.load()
    box = settings.providers["box"]
    assert box.config is not None
    assert box.config.root == "/tmp/a" and box.config.timeout_s == 5
    assert box.sources == [str(user_settings), str(project)]
    assert "other" in settings.providers


def test_layers_order_project_local_env_and_explicit(
    user_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    write(work / ".mngr" / "settings.toml", '[providers.p]\nbackend = "local"\nroot = "project"\n')
    write(work / ".mngr" / "settings.local.toml", '[providers.p]\nroot = "local"\n')
    sub = work / "deep" / "er"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)  # the project file is found by walking up
    assert config.load().providers["p"].config.root == "local"
    env_file = write(tmp_path / "env.toml", '[providers.p]\nroot = "env"\n')
    monkeypatch.setenv("MNGR_CONFIG", str(env_file))
    assert config.load().providers["p"].config.root == "env"
    explicit = write(tmp_path / "cli.toml", '[providers.p]\nroot = "cli"\n')
    assert config.load(explicit).providers["p"].config.root == "cli"
    labels = [layer.label for layer in config.layers(explicit)]
    assert labels == ["built-in", "user", "project", "local", "MNGR_CONFIG", "--config"]


def test_default_provider_must_exist(user_settings: Path) -> None:
    write(user_settings, 'default_provider = "nope"\n')
    with pytest.raises(ConfigError, match="default_provider 'nope'"):
        config.load()


def test_malformed_toml_names_file_and_line(user_settings: Path) -> None:
    write(user_settings, '[[providers]]\nname = "a"\nbackend = \n')
    with pytest.raises(ConfigError) as exc:
        config.load()
    assert str(user_settings) in str(exc.value) and "line 3" in str(exc.value)


def test_unknown_key_gets_did_you_mean_and_line(user_settings: Path) -> None:
    write(user_settings, '[[providers]]\nname = "a"\nbackend = "local"\nrooot = "/x"\n')
    with pytest.raises(ConfigError) as exc:
        config.load()
    message = str(exc.value)
    assert f"{user_settings}:4" in message and "did you mean 'root'" in message


def test_unknown_top_level_key(user_settings: Path) -> None:
    write(user_settings, "provider = []\n")
    with pytest.raises(ConfigError, match="did you mean 'providers'"):
        config.load()


def test_unknown_backend(user_settings: Path) -> None:
    write(user_settings, '[providers.a]\nbackend = "lokal"\n')
    with pytest.raises(ConfigError, match=r"settings.toml:2.*unknown backend 'lokal'.*'local'"):
        config.load()


def test_provider_without_name_or_backend(user_settings: Path) -> None:
    write(user_settings, '[[providers]]\nbackend = "local"\n')
    with pytest.raises(ConfigError, match="has no 'name'"):
        config.load()
    write(user_settings, '[[providers]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="has no 'backend'"):
        config.load()


def test_duplicate_names_in_one_file(user_settings: Path) -> None:
    write(
        user_settings,
        '[[providers]]\nname = "a"\nbackend = "local"\n\n'
        '[[providers]]\nname = "a"\nbackend = "local"\n',
    )
    with pytest.raises(ConfigError, match=r"settings.toml:6: provider 'a' is defined twice"):
        config.load()


def test_settings_path_that_is_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(folder)


def test_unreadable_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "s.toml", "")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make the read fail as it would for a user
        real = Path.read_bytes

        def denied(self: Path) -> bytes:
            if self == path:
                raise PermissionError(13, "Permission denied")
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match="permission denied"):
        config.load(path)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


def test_invalid_provider_name(user_settings: Path) -> None:
    write(user_settings, '[providers."Bad Name"]\nbackend = "local"\n')
    with pytest.raises(ConfigError, match="invalid provider name"):
        config.load()


def test_wrong_value_type(user_settings: Path) -> None:
    write(user_settings, '[providers.a]\nbackend = "local"\ntimeout_s = "soon"\n')
    with pytest.raises(ConfigError, match=r"settings.toml:3: provider 'a': timeout_s"):
        config.load()


def test_unknown_provider_lookup_suggests(user_settings: Path) -> None:
    with pytest.raises(NotFoundError, match="did you mean 'local'"):
        config.load().provider("locl")


def test_settings_for_local_docker_without_docker_installed(
    user_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.shutil, "which", lambda _name: None)
    write(user_settings, "[providers.local_docker]\nenabled = false\n")
    entry = config.load().providers["local_docker"]
    assert entry.unavailable == "'docker' is not on PATH" and entry.backend == "docker"


def test_disabled_provider_is_skipped_by_list_and_refused_by_verbs(
    user_settings: Path, tmp_path: Path
) -> None:
    from mngr.engine import Engine
    from mngr.errors import UsageError

    write(user_settings, '[providers.off]\nbackend = "local"\nenabled = false\n')
    engine = Engine(config.load())
    assert "off" not in engine.usable_providers()
    with pytest.raises(UsageError, match="disabled"):
        engine.backend("off")


def test_both_forms_mixed_in_one_file(user_settings: Path) -> None:
    write(
        user_settings,
        '[[providers]]\nname = "a"\nbackend = "local"\n\n'
        '[providers.b]\nbackend = "local"\nroot = "/tmp/b"\n',
    )
    settings = config.load()
    assert settings.providers["a"].config.root is None
    assert settings.providers["b"].config.root == "/tmp/b"


def test_a_misspelt_required_key_is_reported_as_the_misspelling(user_settings: Path) -> None:
    write(user_settings, '[providers.cloud]\nbackend = "aws"\nregoin = "us-east-1"\n')
    with pytest.raises(ConfigError, match=r"settings.toml:3: .*unknown key 'regoin'.*'region'"):
        config.load()


def test_a_built_in_cannot_change_its_backend(user_settings: Path) -> None:
    write(user_settings, '[providers.local]\nbackend = "aws"\nregion = "x"\n')
    with pytest.raises(ConfigError, match=r"settings.toml:2: 'local' is a built-in provider"):
        config.load()
