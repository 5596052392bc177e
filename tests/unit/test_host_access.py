"""ssh config stanzas and forward port specs: pure rules, no processes."""

from __future__ import annotations

import pytest

from mngr.errors import UsageError
from mngr.forward import PortPair, bind_address, parse_ports
from mngr.toolkit.ssh import SshEndpoint, SshSettings, SshTarget, config_stanza


def endpoint(**target: object) -> SshEndpoint:
    fields = {"address": "10.0.0.5", "user": "dev", "port": 2222, "identity_file": "/k/id"}
    settings = SshSettings(known_hosts="/k/known_hosts", accept_new=True)
    return SshEndpoint(SshTarget(**{**fields, **target}), settings)  # type: ignore[arg-type]


def test_stanza_names_every_setting_mngr_connects_with() -> None:
    assert config_stanza(["web", "web.pool"], endpoint()) == (
        "Host web web.pool\n"
        "    HostName 10.0.0.5\n"
        "    Port 2222\n"
        "    User dev\n"
        "    IdentityFile /k/id\n"
        "    IdentitiesOnly yes\n"
        "    UserKnownHostsFile /k/known_hosts\n"
        "    StrictHostKeyChecking accept-new\n"
    )


def test_stanza_leaves_out_what_is_not_set() -> None:
    text = config_stanza(["web"], endpoint(user=None, identity_file=None))
    assert "    User " not in text and "Identit" not in text


@pytest.mark.parametrize(
    "field,value",
    [
        ("user", "ec2-user\n    ProxyCommand touch /tmp/pwned"),
        ("user", "a b"),
        ("user", "%d"),
        ("address", "-oProxyCommand=x"),
        ("address", "host#comment"),
        ("identity_file", '/k/"id'),
        ("identity_file", "/k/id\r"),
    ],
)
def test_a_value_that_could_add_config_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="cannot be written into an ssh config safely"):
        config_stanza(["web"], endpoint(**{field: value}))


def test_port_specs() -> None:
    assert parse_ports(["8080", "9000:80", "0:81"]) == [
        PortPair(0, 8080),
        PortPair(9000, 80),
        PortPair(0, 81),
    ]


@pytest.mark.parametrize("spec", ["x", "80:", "0", "70000", "1:2:3", "-1:80", "8080:65536"])
def test_bad_port_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_ports([spec])


def test_one_local_port_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="twice"):
        parse_ports(["9000:80", "9000:81"])


def test_bind_address_is_an_ip() -> None:
    assert bind_address("::1") == "::1"
    with pytest.raises(UsageError):
        bind_address("localhost")
