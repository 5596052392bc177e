"""Bearer tokens: none or a wrong one is 401, a read-only one on a change is 403 (exit 5
through the client); tokens never show in logs, messages or dry runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.server.conftest import RO_TOKEN, RW_TOKEN, TOKEN_ENV, WRONG_TOKEN, hosts_of

pytestmark = pytest.mark.server


@pytest.mark.parametrize("token", [None, "", WRONG_TOKEN, RW_TOKEN + "x", RW_TOKEN[:-1]])
def test_missing_or_wrong_token_is_401_json(shared_server, token) -> None:
    headers = {"Authorization": "Bearer "} if token == "" else None
    answer = shared_server.api("GET", "/v1/hosts", token=token or None, headers=headers)
    assert answer.status == 401
    assert answer.body["error"]["kind"] == "unauthorised"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_only_health_answers_without_a_token(shared_server) -> None:
    assert shared_server.api("GET", "/v1/health", token=None).body["status"] == "ok"
    assert shared_server.api("GET", "/v1/openapi.json", token=None).status == 401
    doc = shared_server.api("GET", "/v1/openapi.json", token=RO_TOKEN).body
    assert doc["openapi"].startswith("3.") and "/v1/hosts" in doc["paths"]
    assert shared_server.api("GET", "/v1/docs", token=None).status == 401
    assert shared_server.api("GET", "/v1/docs").status == 404  # no page: it cannot send a token
    assert shared_server.api("GET", "/v1/nothing-here", token=None).status == 401


@pytest.mark.parametrize(
    ("token", "status"), [(None, 401), (WRONG_TOKEN, 401), (RO_TOKEN, 403), (RW_TOKEN, 422)]
)
def test_the_token_is_checked_before_the_body_is_read(shared_server, token, status) -> None:
    answer = shared_server.api(
        "POST",
        "/v1/hosts",
        raw=b"{not json",
        token=token,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == status
    assert answer.body["error"]["kind"] == ("usage" if status == 422 else "unauthorised")


def test_wrong_token_through_the_client_is_exit_5(team, mngr, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, WRONG_TOKEN)
    created = mngr("host", "create", "web", "-p", "team")
    assert created.exit_code == 5 and "refused the token" in created.stderr
    assert mngr("provider", "check", "team").exit_code == 5
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 6  # list: an error row for the provider, as for any provider that fails
    [row] = doc["errors"]
    assert row["provider"] == "team" and row["kind"] == "unauthorised"
    assert not (team.data_dir / "web").exists()


def test_read_only_token_lists_but_cannot_change_anything(team, mngr, monkeypatch) -> None:
    assert mngr("host", "create", "keep", "-p", "team").exit_code == 0
    monkeypatch.setenv(TOKEN_ENV, RO_TOKEN)
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 0 and [h["name"] for h in doc["hosts"]] == ["keep"]
    created = mngr("host", "create", "web", "-p", "team")
    assert created.exit_code == 5 and "read-only" in created.stderr
    assert not (team.data_dir / "web").exists()
    assert mngr("host", "stop", "keep", "-p", "team").exit_code == 5
    assert mngr("host", "destroy", "keep", "-p", "team", "--yes").exit_code == 5
    assert (team.data_dir / "keep").exists()
    for method, path in (
        ("POST", "/v1/hosts"),
        ("DELETE", "/v1/hosts/keep"),
        ("POST", "/v1/hosts/keep/snapshots"),
        ("DELETE", "/v1/snapshots/snap-x"),
    ):
        body = {"name": "zz"} if method == "POST" else None
        answer = team.api(method, path, body, token=RO_TOKEN)
        assert answer.status == 403, (method, path)
        assert answer.body["error"]["kind"] == "unauthorised"


def test_tokens_never_reach_the_server_log_or_client_messages(team, mngr, monkeypatch) -> None:
    assert mngr("host", "create", "web", "-p", "team").exit_code == 0
    outputs = [mngr("host", "list", "-p", "team"), mngr("host", "create", "web", "-p", "team")]
    outputs.append(mngr("host", "destroy", "web", "-p", "team", "--dry-run"))
    outputs.append(mngr("provider", "show", "team", "--format", "json"))
    outputs.append(mngr("config", "show", "--format", "json"))
    monkeypatch.setenv(TOKEN_ENV, WRONG_TOKEN)
    outputs.append(mngr("host", "create", "other", "-p", "team"))
    team.api("GET", "/v1/hosts", token=RO_TOKEN)
    for result in outputs:
        for secret in (RW_TOKEN, RO_TOKEN, WRONG_TOKEN):
            assert secret not in result.stdout + result.stderr
    log = team.log()
    assert '"GET /v1/hosts HTTP/1.1" 200' in log  # the access log is on...
    for secret in (RW_TOKEN, RO_TOKEN, WRONG_TOKEN):
        assert secret not in log  # ...and holds no token


def test_token_file_in_the_client_settings(team, mngr, user_settings: Path, tmp_path) -> None:
    token_file = tmp_path / "team.token"
    token_file.write_text(f"# the team server\n{RW_TOKEN}\n")
    user_settings.write_text(
        f'[providers.team]\nbackend = "mngr"\nurl = "{team.url}"\ntoken_file = "{token_file}"\n'
    )
    assert mngr("host", "create", "web", "-p", "team").exit_code == 0
    token_file.write_text("# empty\n")
    result = mngr("host", "create", "web2", "-p", "team")
    assert result.exit_code == 2 and "no token in token file" in result.stderr


def test_unset_token_env_is_a_configuration_error(team, mngr, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    result = mngr("host", "create", "web", "-p", "team")
    assert result.exit_code == 2 and TOKEN_ENV in result.stderr


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('url = "http://x"\ntoken = "abc"', "never put the token in a settings file"),
        (
            'url = "http://x"\ntoken_env = "A"\ntoken_file = "/f"',
            "token_env or token_file, not both",
        ),
        ('url = "ftp://x"\ntoken_env = "A"', "url must be http"),
        ('url = "https://me:secret@x"\ntoken_env = "A"', "holds a password inside a URL"),
        ('url = "http://x"\ntoken_env = "A"\nproviders = ["Bad"]', "invalid provider name"),
        ('url = "http://x"\ntoken_env = "A"\ntimeout_s = 0', "timeout_s"),
    ],
)
def test_bad_client_settings_are_refused(mngr, user_settings: Path, keys, message) -> None:
    user_settings.write_text(f'[providers.team]\nbackend = "mngr"\n{keys}\n')
    result = mngr("host", "list", "-p", "team")
    assert result.exit_code == 2
    assert message in result.stderr and str(user_settings) in result.stderr
    assert "secret" not in result.stderr
    assert "Value error" not in result.stderr and "Input should" not in result.stderr


def test_a_server_that_wants_a_token_says_where_to_set_it(
    server, mngr, user_settings: Path
) -> None:
    """A provider without token_env/token_file sends none; the 401 names the file to edit."""
    user_settings.write_text(f'[providers.team]\nbackend = "mngr"\nurl = "{server.url}"\n')
    listed = mngr("provider", "list")
    assert listed.exit_code == 0
    assert "configured without a token" in listed.stdout
    shown = mngr("provider", "show", "team")
    assert "configured without a token" in shown.stdout
    for args in (("host", "create", "web", "-p", "team"), ("provider", "check", "team")):
        result = mngr(*args)
        said = result.stdout + result.stderr  # check: a row on stdout; create: stderr
        assert result.exit_code == 5, said
        assert "wants a token" in said
        assert "token_env" in said and "token_file" in said
        assert f"[providers.team] in {user_settings}" in said
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 6 and doc["errors"][0]["kind"] == "unauthorised"
    assert "wants a token" in doc["errors"][0]["message"]


def test_token_file_rules(server_deps, tmp_path: Path) -> None:
    from mngr.errors import ConfigError
    from mngr.server import load_tokens

    path = tmp_path / "tokens"
    path.write_text(f"# comment\n\n  {RW_TOKEN}  \nro:{RO_TOKEN}\nrw:{WRONG_TOKEN}\n")
    tokens = load_tokens(path)
    assert [(t.secret.decode(), t.read_only) for t in tokens] == [
        (RW_TOKEN, False),
        (RO_TOKEN, True),
        (WRONG_TOKEN, False),
    ]
    for text, message in (
        ("# only comments\n\n", "no tokens"),
        ("short-secret\n", ":1: token is shorter than 16"),
        ("ro:has a space in it here\n", "printable ASCII"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as info:
            load_tokens(path)
        assert "short-secret" not in str(info.value) and "space in" not in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_tokens(tmp_path / "missing")


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        (0o620, "writable by its group (mode 0620)"),
        (0o602, "writable by others (mode 0602)"),
        (0o666, "writable by others (mode 0666)"),
    ],
)
def test_serve_refuses_a_token_file_others_can_write(server_deps, tmp_path, mode, words) -> None:
    from tests.server.conftest import start_serve

    server = start_serve(tmp_path / "srv", wait=False, token_mode=mode)
    assert server.proc.wait(30) == 2
    [line] = server.log().splitlines()
    assert words in line and "chmod 600" in line and RW_TOKEN not in line


@pytest.mark.parametrize(
    ("mode", "words"),
    [(0o640, "readable by its group (mode 0640)"), (0o604, "readable by others (mode 0604)")],
)
def test_serve_warns_about_a_token_file_others_can_read(serve, mode, words) -> None:
    server = serve(token_mode=mode)
    [warning] = [line for line in server.log().splitlines() if "token file" in line]
    assert warning.startswith("warning: ") and words in warning


def test_a_private_token_file_gets_no_warning(server) -> None:
    assert "token file" not in server.log()


def test_serve_refuses_a_bad_token_file(server_deps, tmp_path: Path) -> None:
    from tests.server.conftest import start_serve

    server = start_serve(tmp_path / "bad", tokens="tooshort\n", wait=False)
    assert server.proc.wait(30) == 2
    assert "token is shorter than" in server.log() and "tooshort" not in server.log()


def test_server_answers_are_json_with_the_schema_version(shared_server) -> None:
    answer = shared_server.api("GET", "/v1/providers")
    assert answer.status == 200
    assert answer.body["schema_version"] == 1
    assert [p["name"] for p in answer.body["providers"]] == ["local"]
    assert json.dumps(answer.body)  # plain JSON
