"""The ssh backend and the CLI over a faked `ssh` (pytest-subprocess): the argv sent, and
ssh's real failure texts mapped to the right errors, error rows and exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mngr_backends.ssh import CLAIMED_EXIT, SshBackend

from mngr import config as mngr_config
from mngr.backend import Listing
from mngr.engine import Engine
from mngr.errors import VendorTimeoutError

pytestmark = pytest.mark.sshd

HOST_ID = "host-" + "c" * 32
RECORD = {"id": HOST_ID, "name": "web", "created_at": "2024-01-01T00:00:00Z", "tags": {}}

REFUSED = "ssh: connect to host 10.9.0.2 port 22: Connection refused\r\n"
TIMED_OUT = "ssh: connect to host 10.9.0.2 port 22: Connection timed out\r\n"
NO_ROUTE = "ssh: connect to host 10.9.0.2 port 22: No route to host\r\n"
DENIED = "dev@10.9.0.2: Permission denied (publickey).\r\n"
UNKNOWN_KEY = (
    "No ED25519 host key is known for 10.9.0.2 and you have requested strict checking.\r\n"
    "Host key verification failed.\r\n"
)
CHANGED_KEY = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:XkWYU35K7np3dFQf/LiqNg6fkcIoxzzToWptmTrqxig.
Please contact your system administrator.
Add correct host key in /kh to get rid of this message.
Offending ED25519 key in /kh:1
  remove with:
  ssh-keygen -f "/kh" -R "10.9.0.2"
Host key for 10.9.0.2 has changed and you have requested strict checking.
Host key verification failed.
"""

SETTINGS = """\
[providers.pool]
backend = "ssh"
known_hosts = "/kh"
timeout_s = 5
machines = [
    { name = "m1", address = "10.9.0.1", user = "dev" },
    { name = "m2", address = "10.9.0.2", user = "dev" },
    { name = "m3", address = "10.9.0.3", user = "dev" },
]
"""


@pytest.fixture
def pool(user_settings: Path) -> SshBackend:
    """The `pool` provider as the CLI will build it (same control dir, same argv)."""
    user_settings.write_text(SETTINGS)
    backend = Engine(mngr_config.load()).backend("pool")
    assert isinstance(backend, SshBackend)
    return backend


def machine(backend: SshBackend, name: str):  # noqa: ANN201 - a Machine
    return backend.machine(name)


def answer_list(fp, backend: SshBackend, **per_machine: dict) -> None:  # noqa: ANN001
    for name, reply in per_machine.items():
        fp.register(backend.spec.read(machine(backend, name)).argv, **reply)


def owner(record: dict) -> str:
    return f"{record['id']} {record['name']}\n{json.dumps(record)}\n"


def test_list_reads_each_machine_once(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    answer_list(fp, pool, m1={"stdout": owner(RECORD)}, m2={"stdout": ""}, m3={"stdout": ""})
    result = mngr("host", "list", "-p", "pool", "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["web"] and doc["errors"] == []
    assert doc["hosts"][0]["address"]["machine"] == "m1"
    for name in ("m1", "m2", "m3"):
        assert fp.call_count(pool.spec.read(machine(pool, name)).argv) == 1


@pytest.mark.parametrize(
    ("stderr", "kind", "text"),
    [
        (REFUSED, "unreachable", "machine 'm2' (dev@10.9.0.2:22) is unreachable: ssh: connect"),
        (TIMED_OUT, "unreachable", "Connection timed out"),
        (NO_ROUTE, "unreachable", "No route to host"),
        (DENIED, "unauthorised", "not authorised: dev@10.9.0.2: Permission denied (publickey)"),
        (UNKNOWN_KEY, "host-key", "host key is unknown (not in /kh)"),
        (CHANGED_KEY, "host-key", "host key has CHANGED"),
    ],
)
def test_one_failing_machine_is_an_error_row_and_the_others_are_listed(
    fp,
    pool: SshBackend,
    mngr,
    stderr: str,
    kind: str,
    text: str,  # noqa: ANN001
) -> None:
    answer_list(
        fp,
        pool,
        m1={"stdout": owner(RECORD)},
        m2={"returncode": 255, "stderr": stderr},
        m3={"stdout": ""},
    )
    result = mngr("host", "list", "-p", "pool", "--format", "json")
    assert result.exit_code == 6
    doc = json.loads(result.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["web"]
    [row] = doc["errors"]
    assert row["provider"] == "pool" and row["kind"] == kind
    assert text in row["message"] and row["message"].startswith("machine 'm2'")


def test_changed_host_key_error_says_how_to_check_and_fix(fp, pool: SshBackend) -> None:  # noqa: ANN001
    fp.register(pool.spec.read(machine(pool, "m2")).argv, returncode=255, stderr=CHANGED_KEY)
    with pytest.raises(Exception) as caught:
        pool._read(machine(pool, "m2"))
    assert caught.value.kind == "host-key"
    assert "refusing to connect" in str(caught.value)
    assert "ssh-keygen -R 10.9.0.2 -f /kh" in str(caught.value)


def test_a_machine_that_never_answers_becomes_a_timeout_row(
    fp,
    user_settings: Path,  # noqa: ANN001
) -> None:
    user_settings.write_text(SETTINGS.replace("timeout_s = 5", "timeout_s = 1"))
    pool = Engine(mngr_config.load()).backend("pool")

    def hang(process) -> None:  # noqa: ANN001 - every wait for it times out
        raise subprocess.TimeoutExpired(process.args, 0.1)

    answer_list(fp, pool, m1={"stdout": ""}, m2={"callback": hang}, m3={"stdout": ""})
    listing = pool.list_hosts()
    assert isinstance(listing, Listing)
    [error] = listing.errors
    assert isinstance(error, VendorTimeoutError)
    assert str(error) == "machine 'm2': 'ssh' did not answer within 1s"


def test_every_machine_down_is_one_row_each_and_exit_6(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    down = {"returncode": 255, "stderr": REFUSED}
    answer_list(fp, pool, m1=down, m2=down, m3=down)
    result = mngr("host", "list", "-p", "pool", "--format", "json")
    assert result.exit_code == 6
    assert len(json.loads(result.stdout)["errors"]) == 3


def test_missing_ssh_binary_is_exit_4(user_settings: Path, mngr) -> None:  # noqa: ANN001
    user_settings.write_text(SETTINGS.replace("timeout_s = 5", 'binary = "/nonexistent/ssh"'))
    result = mngr("host", "list", "--provider", "pool")
    assert result.exit_code == 6
    assert "'/nonexistent/ssh' was not found" in result.stderr
    create = mngr("host", "create", "web", "--provider", "pool")
    assert create.exit_code == 4


def test_create_skips_claimed_and_unreachable_machines(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    fp.register(
        ["ssh", fp.any()],
        returncode=CLAIMED_EXIT,
        stdout="host-" + "d" * 32 + " api\n",
        occurrences=1,
    )  # m1: claimed by api
    fp.register(["ssh", fp.any()], returncode=255, stderr=REFUSED, occurrences=1)  # m2: down
    fp.register(["ssh", fp.any()], occurrences=1)  # m3: claimed
    answer_list(fp, pool, m1={"stdout": ""}, m2={"returncode": 255, "stderr": REFUSED})
    fp.register(["ssh", fp.any()], occurrences=1)  # the record
    result = mngr("host", "create", "web", "--provider", "pool", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["hosts"][0]["address"]["machine"] == "m3"
    claims = [c for c in fp.calls if "mkdir claim" in c[-1]]
    assert [c[c.index("--") + 1] for c in claims] == ["10.9.0.1", "10.9.0.2", "10.9.0.3"]


def test_no_free_machine_is_exit_1_naming_each_machine(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    for owner_name in ("a", "b", "c"):
        fp.register(
            ["ssh", fp.any()],
            returncode=CLAIMED_EXIT,
            stdout=f"host-{'e' * 32} {owner_name}\n",
            occurrences=1,
        )
    result = mngr("host", "create", "web", "--provider", "pool")
    assert result.exit_code == 1
    assert "no free machine in provider 'pool'" in result.stderr
    assert "machine 'm3' is claimed by 'c'" in result.stderr
    assert not any("mv -- claim" in c[-1] for c in fp.calls)  # nothing of ours to release


def test_name_taken_on_another_machine_releases_the_claim(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    fp.register(["ssh", fp.any()], occurrences=1)  # claim m1
    answer_list(fp, pool, m2={"stdout": owner(RECORD)}, m3={"stdout": ""})
    fp.register(["ssh", fp.any()], occurrences=1)  # the release
    result = mngr("host", "create", "web", "--provider", "pool")
    assert result.exit_code == 1
    assert "host 'web' already exists in provider 'pool' (on machine 'm2')" in result.stderr
    release = fp.calls[-1]
    assert "mv -- claim" in release[-1] and release[release.index("--") + 1] == "10.9.0.1"


def test_chosen_machine_already_claimed_is_a_clear_conflict(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    fp.register(
        ["ssh", fp.any()], returncode=CLAIMED_EXIT, stdout=f"{HOST_ID} web\n", occurrences=1
    )
    result = mngr("host", "create", "api", "--provider", "pool", "--machine", "m2")
    assert result.exit_code == 1
    assert "machine 'm2' of provider 'pool' is claimed by host 'web'" in result.stderr
    assert len(fp.calls) == 1 and "10.9.0.2" in fp.calls[0]


def test_chosen_machine_must_exist(pool: SshBackend, mngr) -> None:  # noqa: ANN001
    result = mngr("host", "create", "api", "--provider", "pool", "--machine", "m4")
    assert result.exit_code == 2
    assert "provider 'pool' has no machine 'm4' (expected one of: m1, m2, m3)" in result.stderr


def test_denied_chosen_machine_is_exit_5(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    fp.register(["ssh", fp.any()], returncode=255, stderr=DENIED)
    result = mngr("host", "create", "api", "--provider", "pool", "--machine", "m2")
    assert result.exit_code == 5 and "not authorised" in result.stderr


def test_dry_run_runs_nothing(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    result = mngr("host", "create", "api", "--provider", "pool", "--dry-run")
    assert result.exit_code == 0 and not fp.calls
    assert "claim the first free machine of m1, m2, m3" in result.stdout


def test_destroy_releases_only_its_own_claim(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    answer_list(fp, pool, m1={"stdout": ""}, m2={"stdout": owner(RECORD)}, m3={"stdout": ""})
    release = pool.spec.release(machine(pool, "m2"), HOST_ID, "web")
    fp.register(release.argv)
    result = mngr("host", "destroy", "web", "-p", "pool", "--yes")
    assert result.exit_code == 0, result.stderr
    assert fp.call_count(release.argv) == 1


def test_stop_and_snapshot_are_refused_with_the_reason(fp, pool: SshBackend, mngr) -> None:  # noqa: ANN001
    answer_list(fp, pool, m1={"stdout": owner(RECORD)}, m2={"stdout": ""}, m3={"stdout": ""})
    result = mngr("host", "stop", "web", "-p", "pool")
    assert result.exit_code == 2
    assert "backend 'ssh' cannot stop/start: a pool machine is not mngr's to power off" in (
        result.stderr
    )
    answer_list(fp, pool, m1={"stdout": owner(RECORD)}, m2={"stdout": ""}, m3={"stdout": ""})
    snap = mngr("host", "snapshot", "create", "web", "-p", "pool")
    assert snap.exit_code == 2 and "cannot snapshot" in snap.stderr


def test_image_is_refused(pool: SshBackend, mngr) -> None:  # noqa: ANN001
    result = mngr("host", "create", "api", "--provider", "pool", "--image", "ubuntu")
    assert result.exit_code == 2 and "--image is not supported by backend 'ssh'" in result.stderr


def test_machine_flag_is_offered_and_refused_elsewhere(pool: SshBackend, mngr) -> None:  # noqa: ANN001
    assert "--machine" in mngr("host", "create", "--help").stdout
    other = mngr("host", "create", "api", "--provider", "local", "--machine", "m1")
    assert other.exit_code == 2
    assert "--machine is not supported by backend 'local'" in other.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('host_dir = "~/../etc"', "host_dir"),
        ('accept_new = "sometimes"', "accept_new"),
        ('strict = "no"', "unknown key 'strict'"),
    ],
)
def test_bad_settings_are_exit_2_naming_the_file(
    user_settings: Path,
    mngr,
    line: str,
    message: str,  # noqa: ANN001
) -> None:
    user_settings.write_text(SETTINGS.replace("timeout_s = 5", line))
    result = mngr("host", "list", "-p", "pool")
    assert result.exit_code == 2
    assert str(user_settings) in result.stderr and message in result.stderr
