"""JSON over HTTP for a backend that talks to an API instead of a vendor CLI (the `mngr`
backend). Stdlib only. TLS is always verified (a private CA may be named), a redirect is an
error (a token goes only where the URL says), loopback never goes through a proxy, the whole
answer has a deadline and a size cap, and every failure is one MngrError."""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.parse
from dataclasses import dataclass
from functools import cache
from typing import Any

from mngr import __version__
from mngr.errors import MngrError, UnreachableError, VendorOutputError, VendorTimeoutError

# Far more than any host list: a bigger answer is refused, never held in memory.
MAX_RESPONSE_BYTES = 64 << 20
MAX_ERROR_BYTES = 1 << 20


class HttpStatusError(MngrError):
    """The server answered with an error status; `kind` and `message` from its JSON body
    (`{"error": {"kind", "message"}}`) when it sent one."""

    def __init__(self, status: int, reason: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.error_kind = status, reason, kind


@dataclass(frozen=True)
class JsonClient:
    base_url: str
    ca_file: str | None = None
    timeout_s: float = 60.0

    def url(self, path: str, **query: Any) -> str:
        """`base_url + path` with the query: None and False left out, a list repeated."""
        pairs = [
            (key, str(v).lower() if isinstance(v, bool) else str(v))
            for key, value in query.items()
            if value is not None and value is not False
            for v in (value if isinstance(value, list) else [value])
        ]
        return self.base_url + path + ("?" + urllib.parse.urlencode(pairs) if pairs else "")

    @property
    def plain_http_to_another_machine(self) -> bool:
        parts = urllib.parse.urlsplit(self.base_url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        token: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One request -> its JSON answer. An error status is HttpStatusError."""
        import urllib.error  # here: loading settings (which imports the backend) stays fast
        import urllib.request
        from http.client import HTTPException

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", f"mngr/{__version__}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_unredirected_header("Authorization", f"Bearer {token}")
        timeout = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout
        try:
            with self._opener().open(request, timeout=timeout) as response:
                raw = _read_by(response, deadline)
        except urllib.error.HTTPError as exc:
            raise _status_error(exc) from None
        except urllib.error.URLError as exc:
            raise _unreachable(url, exc.reason, timeout) from None
        except (OSError, HTTPException) as exc:
            raise _unreachable(url, exc, timeout) from None
        if raw is None:
            raise VendorOutputError(
                f"{method} {url} answered with more than {MAX_RESPONSE_BYTES >> 20} MiB"
            )
        try:
            return json.loads(raw)
        except ValueError:
            raise VendorOutputError(
                f"{method} {url} answered with something other than JSON"
            ) from None

    def _opener(self) -> Any:
        import ssl
        import urllib.request

        handlers: list[urllib.request.BaseHandler] = [_no_redirects()]
        if self.base_url.startswith("https:"):  # a TLS context costs ~25 ms: only when used
            context = ssl.create_default_context(cafile=self.ca_file)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        if is_loopback(urllib.parse.urlsplit(self.base_url).hostname or ""):
            handlers.append(urllib.request.ProxyHandler({}))  # never send loopback to a proxy
        return urllib.request.build_opener(*handlers)


def status_error(status: int, reason: str, body: bytes) -> HttpStatusError:
    """An error answer: its kind and message from the JSON body (`{"error": {...}}`) when it
    has one."""
    try:
        detail = json.loads(body or b"{}").get("error") or {}
    except (ValueError, AttributeError):
        detail = {}
    if not isinstance(detail, dict):
        detail = {}
    message = str(detail.get("message") or reason or "no error text")
    return HttpStatusError(status, reason, str(detail.get("kind") or ""), message)


def _status_error(exc: Any) -> HttpStatusError:
    try:
        body = exc.read(MAX_ERROR_BYTES)
    except OSError:
        body = b""
    return status_error(exc.code, str(exc.reason or ""), body)


def _unreachable(url: str, reason: Any, timeout: float) -> MngrError:
    import ssl

    if isinstance(reason, TimeoutError):
        return VendorTimeoutError(f"{url} did not answer within {timeout:g}s")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return UnreachableError(
            f"cannot reach {url}: TLS certificate not trusted ({reason.verify_message}); "
            "name a private CA with ca_file"
        )
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return UnreachableError(f"cannot reach {url}: {text}")


@cache
def _no_redirects() -> Any:
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        """A redirect is an error: the request (and its token) goes only where `url` says."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            return None

    return NoRedirects()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_by(response: Any, deadline: float) -> bytes | None:
    """The whole body, None when it is over MAX_RESPONSE_BYTES, or TimeoutError once the
    deadline has passed: the socket timeout alone lets a server that trickles its answer hold
    the caller for ever."""
    chunks = []
    size = 0
    while chunk := response.read1(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return None
        if time.monotonic() > deadline:
            raise TimeoutError
    return b"".join(chunks)
