"""Stand-in vendors for fault injection, one per real backend.

`vendor_for(backend)` configures the provider `flaky` of that backend in the user settings:
its `binary` (docker, aws, ssh), `python` (modal: the shim's interpreter) or `url` (mngr: a
loopback HTTP server) is a stand-in written into tmp_path that logs every call and answers
from a scenario the test sets per verb (`vendor.answer(verb, ...)`, `vendor.fault(...)`).
The real runner, engine, plans, backend and CLI do the rest.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.docker.conftest import docker_engine, docker_env  # noqa: F401 - a real engine

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STANDIN = Path(__file__).with_name("standin.py")
PROVIDER = "flaky"
TOKEN_ENV = "FAULTS_MNGR_TOKEN"
HOST_ID = "host-" + "ab" * 16
CREATED = "2026-03-01T10:00:00Z"
BACKENDS = ["docker", "aws", "ssh", "modal", "mngr"]
CLI_BACKENDS = ["docker", "aws", "ssh", "modal"]  # those run through the runner

Answer = dict[str, Any]


def fixture_text(path: str) -> str:
    return (FIXTURES / path).read_text(encoding="utf-8")


def ok(out: str = "") -> Answer:
    return {"out": out}


def fail(err: str, code: int = 1) -> Answer:
    return {"err": err, "code": code}


HANG: Answer = {"hang": True}
KILLED: Answer = {"signal": 9}
GARBAGE = ok("<html><body><h1>502 Bad Gateway</h1></body></html>\n")


# --- real error texts, captured from the vendors ----------------------------------------


def docker_error(case: str) -> Answer:
    """docker's real stderr and exit code of one failure (tests/fixtures/docker/errors.json)."""
    captured = json.loads(fixture_text("docker/errors.json"))[case][0]
    return fail(captured["stderr"], captured["returncode"])


def aws_error(case: str) -> Answer:
    captured = json.loads(fixture_text("aws/stderr.json"))[case]
    return fail(captured["stderr"], captured["returncode"])


# ssh's own texts (exit 255), as in tests/ssh/test_fake_ssh.py.
SSH_REFUSED = fail("ssh: connect to host 10.9.0.1 port 22: Connection refused\r\n", 255)
SSH_DENIED = fail("dev@10.9.0.1: Permission denied (publickey).\r\n", 255)
SSH_UNKNOWN_KEY = fail(
    "No ED25519 host key is known for 10.9.0.1 and you have requested strict checking.\r\n"
    "Host key verification failed.\r\n",
    255,
)


def modal_error(kind: str, message: str) -> Answer:
    """What the real shim prints for an error of this kind (its own `_fail`)."""
    from mngr_backends import modal_shim

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = modal_shim._fail(kind, message, human=False)
    return fail(err.getvalue(), code)


MODAL_TOKEN_MISSING = fail(fixture_text("modal/error-token-missing.stderr"), 5)
# CPython's own answer when the interpreter named by `python` lacks mngr.
MODAL_NO_SHIM = fail(
    f"{sys.executable}: Error while finding module specification for "
    "'mngr_backends.modal_shim' (ModuleNotFoundError: No module named 'mngr_backends')\n"
)


def http_error(status: int, kind: str, message: str) -> Answer:
    """An error answer as `mngr serve` sends it."""
    return {"status": status, "out": json.dumps({"error": {"kind": kind, "message": message}})}


# --- the stand-ins -----------------------------------------------------------------------


@dataclass
class Vendor:
    """A backend's stand-in vendor: its scenario, its call log and its provider settings."""

    backend: str
    root: Path
    settings: dict[str, Any]
    answers: dict[str, list[Answer]]
    list_verb: str  # the call `host list` makes
    create_verb: str  # the call that allocates a host
    listed: str  # list output holding one host, `web`
    verb_rule: dict[str, Any] = field(default_factory=dict)

    @property
    def executable(self) -> Path:
        return self.root / {"modal": "python"}.get(self.backend, self.backend)

    def answer(self, verb: str, *answers: Answer) -> None:
        """The n-th call of `verb` gets the n-th answer; the last one repeats."""
        self.answers[verb] = list(answers)
        self.save()

    def save(self) -> None:
        scenario = {"verb": self.verb_rule, "answers": self.answers}
        (self.root / "scenario.json").write_text(json.dumps(scenario))

    def install(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.executable.write_text(f"#!{sys.executable} -IS\n" + STANDIN.read_text())
        self.executable.chmod(0o755)
        self.save()

    def calls(self, verb: str | None = None) -> list[list[str]]:
        """argv (without the program) of every call, or of every call of `verb`."""
        log = self.root / "calls.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [r["argv"] for r in rows if verb is None or r["verb"] == verb]

    def verbs(self) -> list[str]:
        log = self.root / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line)["verb"] for line in log.read_text().splitlines()]

    def stop(self) -> None:
        pass


def _docker(root: Path, timeout_s: float) -> Vendor:
    ps_row = {
        "ID": "c0ffee" + "0" * 58,
        "Names": f"web.{PROVIDER}",
        "State": "running",
        "Status": "Up 2 minutes",
        "Image": "busybox",
        "Labels": {"mngr.host-id": HOST_ID, "mngr.host-name": "web", "mngr.created-at": CREATED},
    }
    return Vendor(
        "docker",
        root,
        {"binary": str(root / "docker"), "timeout_s": timeout_s, "build_timeout_s": timeout_s},
        {
            "ps": [ok()],
            "run": [ok(fixture_text("docker/run.txt"))],
            "version": [ok(fixture_text("docker/version.json"))],
            "*": [ok()],
        },
        list_verb="ps",
        create_verb="run",
        listed=json.dumps(ps_row) + "\n",
        verb_rule={"index": 1},
    )


def _aws(root: Path, timeout_s: float) -> Vendor:
    tags = {
        "mngr:host-id": HOST_ID,
        "mngr:host-name": "web",
        "mngr:provider": PROVIDER,
        "mngr:created-at": CREATED,
        "Name": "web",
    }
    instance = {
        "InstanceId": "i-0123456789abcdef0",
        "ImageId": "ami-0123456789abcdef0",
        "State": {"Name": "running"},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    return Vendor(
        "aws",
        root,
        {
            "binary": str(root / "aws"),
            "region": "us-east-1",
            "ami": "ami-0123456789abcdef0",
            "timeout_s": timeout_s,
            "wait_timeout_s": 10,
            # The user's own key pair and group, no wait for ssh: faults of the launch itself.
            "key_name": "ops",
            "security_group_ids": ["sg-0123456789abcdef0"],
            "wait_for_ssh": False,
        },
        {
            "describe-images": [ok(fixture_text("aws/describe-images-base.json"))],
            "describe-instances": [ok(fixture_text("aws/describe-instances-empty.json"))],
            "run-instances": [ok(fixture_text("aws/run-instances.json"))],
            "*": [ok("{}")],
        },
        list_verb="describe-instances",
        create_verb="run-instances",
        listed=json.dumps({"Reservations": [{"Instances": [instance]}]}, indent=4),
        verb_rule={"index": 2},
    )


def _ssh(root: Path, timeout_s: float) -> Vendor:
    record = {"schema_version": 1, "id": HOST_ID, "name": "web", "created_at": CREATED}
    return Vendor(
        "ssh",
        root,
        {
            "binary": str(root / "ssh"),
            "machines": [{"name": "m1", "address": "10.9.0.1", "user": "dev"}],
            "known_hosts": str(root / "known_hosts"),
            "control_persist_s": 0,
            "connect_timeout_s": 1,
            "timeout_s": timeout_s,
        },
        {"*": [ok()]},
        list_verb="read",
        create_verb="claim",
        listed=f"{HOST_ID} web\n{json.dumps(record, indent=2)}\n",
        # The remote scripts of backends/ssh.py, told apart by what only each one does.
        verb_rule={
            "markers": [
                ["mkdir claim", "claim"],
                [".host.json.tmp", "write"],
                [".released-", "release"],
                ["cat claim/owner &&", "read"],
            ]
        },
    )


def _modal(root: Path, timeout_s: float) -> Vendor:
    return Vendor(
        "modal",
        root,
        {"python": str(root / "python"), "timeout_s": timeout_s, "long_timeout_s": timeout_s},
        {
            "list": [ok('{"hosts": []}\n')],
            "create": [ok(fixture_text("modal/create.json"))],
            "stop": [ok(fixture_text("modal/stop.json"))],
            "*": [ok('{"terminated": [], "forgot_record": false}\n')],
        },
        list_verb="list",
        create_verb="create",
        listed=fixture_text("modal/list.json"),
        verb_rule={"index": 3},  # python -m mngr_backends.modal_shim VERB
    )


class HttpVendor(Vendor):
    """A loopback HTTP server standing in for `mngr serve`. An answer may also carry
    `status`; `signal` drops the connection unanswered (the server died mid-request)."""

    def install(self) -> None:
        self.log: list[dict[str, Any]] = []
        self.released = threading.Event()
        vendor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = urllib.parse.urlsplit(self.path).path
                verb = _http_verb(self.command, path)
                turn = sum(1 for c in vendor.log if c["verb"] == verb)
                vendor.log.append({"verb": verb, "argv": [self.command, self.path]})
                answers = vendor.answers.get(verb) or vendor.answers.get("*") or [{}]
                answer = answers[min(turn, len(answers) - 1)]
                if answer.get("hang"):
                    vendor.released.wait(30)
                    return
                if answer.get("signal"):
                    self.close_connection = True
                    return
                body = answer.get("out", "").encode()
                self.send_response(answer.get("status", 200))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if answer.get("trickle_s"):  # a byte at a time, each well inside the timeout
                    for byte in body:
                        if vendor.released.wait(answer["trickle_s"]):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.settings["url"] = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def save(self) -> None:
        pass

    def calls(self, verb: str | None = None) -> list[list[str]]:
        return [c["argv"] for c in self.log if verb is None or c["verb"] == verb]

    def verbs(self) -> list[str]:
        return [c["verb"] for c in self.log]

    def stop(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _http_verb(method: str, path: str) -> str:
    parts = [p for p in path.split("/") if p]  # v1, hosts, ID, stop
    if parts[1:] == ["hosts"]:
        return "list" if method == "GET" else "create"
    if parts[1:2] == ["hosts"] and method == "DELETE":
        return "destroy"
    return parts[-1] if len(parts) > 3 else "/".join(parts[1:])


def _mngr(root: Path, timeout_s: float) -> Vendor:
    row = {"id": HOST_ID, "name": "web", "provider": "local", "backend": "local"}
    return HttpVendor(
        "mngr",
        root,
        {"token_env": TOKEN_ENV, "timeout_s": timeout_s, "action_timeout_s": timeout_s},
        {
            "list": [ok('{"hosts": [], "errors": []}')],
            "create": [{"status": 201, "out": json.dumps({"host": {**row, "name": "a"}})}],
            "*": [ok("{}")],
        },
        list_verb="list",
        create_verb="create",
        listed=json.dumps({"hosts": [{**row, "state": "running"}], "errors": []}),
    )


MAKERS: dict[str, Callable[[Path, float], Vendor]] = {
    "docker": _docker,
    "aws": _aws,
    "ssh": _ssh,
    "modal": _modal,
    "mngr": _mngr,
}


def provider_toml(backend: str, settings: dict[str, Any]) -> str:
    lines = [f"[providers.{PROVIDER}]", f'backend = "{backend}"']
    for key, value in settings.items():
        if key == "machines":
            tables = [
                "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in m.items()) + " }"
                for m in value
            ]
            lines.append(f"machines = [{', '.join(tables)}]")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def vendor_for(
    user_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Vendor]]:
    """vendor_for(backend, timeout_s=5): the provider `flaky` over a stand-in vendor."""
    monkeypatch.setenv(TOKEN_ENV, "faults-token-0123456789")
    made: list[Vendor] = []

    def make(backend: str, timeout_s: float = 5.0) -> Vendor:
        vendor = MAKERS[backend](tmp_path / "vendor" / backend, timeout_s)
        vendor.install()
        made.append(vendor)
        user_settings.write_text(provider_toml(backend, vendor.settings))
        return vendor

    yield make
    for vendor in made:
        vendor.stop()


def point_at_nothing(vendor: Vendor, user_settings: Path) -> None:
    """Make the stand-in vanish: a binary or interpreter path that does not exist, or a
    loopback port nothing listens on."""
    settings = dict(vendor.settings)
    if vendor.backend == "mngr":
        vendor.stop()
        settings["url"] = vendor.settings["url"]  # the server is gone: connection refused
    else:
        key = "python" if vendor.backend == "modal" else "binary"
        settings[key] = str(vendor.root / "missing" / vendor.executable.name)
    user_settings.write_text(provider_toml(vendor.backend, settings))
