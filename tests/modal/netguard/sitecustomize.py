"""Loaded by every Python process of a stand-in test (this folder is on PYTHONPATH): any
name look-up or connection to an address outside 127.0.0.0/8 is refused and noted in the
file MODAL_TEST_NET_LOG, so a test can show that the shim and SDK met only the stand-in."""

import ipaddress
import os
import socket

_LOG = os.environ.get("MODAL_TEST_NET_LOG")
_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _loopback(host: object) -> bool:
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return host == "localhost"


def _refuse(what: str) -> None:
    if _LOG:
        with open(_LOG, "a") as log:
            log.write(what + "\n")
    raise OSError(f"test network guard: {what} is not loopback")


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _loopback(host):
        _refuse(f"lookup {host}")
    return _getaddrinfo(host, *args, **kwargs)


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse(f"connect {address[0]}")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse(f"connect {address[0]}")
    return _connect_ex(self, address)


if _LOG:
    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
