"""`mngr serve` itself: listen addresses, TLS with a private CA, the optional extra."""

from __future__ import annotations

import datetime
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.server.conftest import TOKEN_FILE_TEXT, hosts_of, server_env, start_serve

pytestmark = pytest.mark.server


def run_serve(tmp_path: Path, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    """Run `mngr serve` expecting it to refuse (and so to exit by itself)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN_FILE_TEXT)
    tokens.chmod(0o600)
    return subprocess.run(
        [sys.executable, "-m", "mngr", "serve", "--token-file", str(tokens), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=server_env(tmp_path),
        check=False,
    )


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "mngr.example.com:8421", "10.1.2.3:0"])
def test_non_loopback_without_tls_is_refused(server_deps, tmp_path, listen) -> None:
    result = run_serve(tmp_path, "--listen", listen)
    assert result.returncode == 2
    assert "refusing to serve plain HTTP" in result.stderr
    assert "--tls-cert" in result.stderr and "--insecure-http" in result.stderr


def test_insecure_http_allows_a_non_loopback_address(serve) -> None:
    server = serve("--listen", "0.0.0.0:0", "--insecure-http")
    assert server.url.startswith("http://0.0.0.0:")
    server.url = server.url.replace("0.0.0.0", "127.0.0.1")
    assert server.api("GET", "/v1/hosts").status == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--listen", "8421"), "use HOST:PORT"),
        (("--listen", "127.0.0.1:http"), "port must be 0 to 65535"),
        (("--listen", "127.0.0.1:70000"), "port must be 0 to 65535"),
        (("--tls-cert", "/nonexistent.pem"), "--tls-cert and --tls-key must be given together"),
        (("--tls-cert", "/no/cert.pem", "--tls-key", "/no/key.pem"), "TLS file not found"),
        (("--provider", "nope"), "no provider named 'nope'"),
    ],
)
def test_bad_serve_arguments_are_usage_errors(server_deps, tmp_path, args, message) -> None:
    result = run_serve(tmp_path, *args)
    assert result.returncode in (2, 3), result.stderr
    assert message in result.stderr


def test_busy_port_is_a_clear_error(server, tmp_path) -> None:
    port = server.url.rsplit(":", 1)[1]
    result = run_serve(tmp_path, "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr


def test_missing_server_extra_is_exit_4(tmp_path) -> None:
    """Without fastapi/uvicorn installed, `serve` says which extra to install."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['mngr', 'serve', '--token-file', sys.argv[1]]\n"
        "from mngr.entry import main\n"
        "main()\n"
    )
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN_FILE_TEXT)
    result = subprocess.run(
        [sys.executable, "-c", blocker, str(tokens)],
        capture_output=True,
        text=True,
        timeout=30,
        env=server_env(tmp_path),
        check=False,
    )
    assert result.returncode == 4
    assert "pip install 'mngr[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_server_cleanly(server) -> None:
    assert server.stop() == 0
    assert "Shutting down" in server.log() and "Traceback" not in server.log()


# --- TLS ------------------------------------------------------------------------------------


def make_certificates(folder: Path) -> dict[str, Path]:
    """A private CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("mngr test CA"))
        .issuer_name(name("mngr test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    require(importlib.util.find_spec("cryptography") is not None, "cryptography (for test certs)")
    return make_certificates(tmp_path / "tls")


def test_tls_with_a_private_ca(serve, certificates, client_settings, mngr) -> None:
    server = serve(
        "--listen", "127.0.0.1:0",
        "--tls-cert", str(certificates["cert"]), "--tls-key", str(certificates["key"]),
    )  # fmt: skip
    assert server.url.startswith("https://127.0.0.1:")
    client_settings(extra={"team": {"ca_file": str(certificates["ca"])}}, team=server)
    created = mngr("host", "create", "secure", "-p", "team")
    assert created.exit_code == 0, created.stderr
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 0 and [h["name"] for h in doc["hosts"]] == ["secure"]

    # Without the CA the certificate is not trusted: TLS is verified by default.
    client_settings(team=server)
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 6 and doc["hosts"] == []
    [row] = doc["errors"]
    assert row["kind"] == "unreachable" and "certificate not trusted" in row["message"]
    assert "ca_file" in row["message"]


def test_tls_and_non_loopback_address_is_allowed(serve, certificates) -> None:
    server = serve(
        "--listen", "0.0.0.0:0",
        "--tls-cert", str(certificates["cert"]), "--tls-key", str(certificates["key"]),
    )  # fmt: skip
    assert server.url.startswith("https://0.0.0.0:")


def test_a_bad_tls_key_is_a_configuration_error(server_deps, certificates, tmp_path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("not a key\n")
    result = run_serve(tmp_path, "--tls-cert", str(certificates["cert"]), "--tls-key", str(broken))
    assert result.returncode == 2 and "cannot load the TLS certificate or key" in result.stderr


def test_plain_http_client_against_a_tls_server_is_unreachable(
    serve, certificates, client_settings, mngr
) -> None:
    server = serve(
        "--tls-cert", str(certificates["cert"]), "--tls-key", str(certificates["key"]),
    )  # fmt: skip
    server.url = server.url.replace("https://", "http://")
    client_settings(team=server)
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 6 and doc["errors"][0]["provider"] == "team"


def test_start_serve_helper_reports_an_early_exit(server_deps, tmp_path) -> None:
    with pytest.raises(AssertionError, match="exited 2"):
        start_serve(tmp_path / "x", "--listen", "0.0.0.0:0")
