"""The test PKI gives real TLS: a server with the gateway certificate accepts the peer's
client certificate and refuses the foreign and expired ones."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from annuaire.whitelist import dn_key, spki_pin
from devtools.pki import (
    crl_paths,
    issue_crl,
    issue_whitelist_signer,
    make_test_pki,
    refresh_test_crl,
)
from devtools.whitelist_sign import pin_of, trust_env


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _handshake(pki: dict, client: str) -> str:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"].cert))
    server_ctx.load_cert_chain(str(pki["gateway"].cert), str(pki["gateway"].key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    outcome: dict[str, str] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome["peer"] = dn_key(_subject(tls.getpeercert(binary_form=True)))
        except (ssl.SSLError, OSError) as exc:
            outcome["error"] = type(exc).__name__ + str(getattr(exc, "reason", ""))

    thread = threading.Thread(target=serve)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(pki["ca"].cert))
    client_ctx.load_cert_chain(str(pki[client].cert), str(pki[client].key))
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"x")
            tls.recv(1)
    except (ssl.SSLError, OSError):
        pass
    thread.join(5)
    listener.close()
    return outcome.get("peer") or outcome.get("error", "")


def _subject(der: bytes | None) -> x509.Name:
    assert der is not None
    return x509.load_der_x509_certificate(der).subject


def test_peer_certificate_is_accepted_and_its_dn_matches(pki: dict) -> None:
    assert _handshake(pki, "peer") == dn_key(pki["peer"].subject)


@pytest.mark.parametrize("client", ["foreign", "expired"])
def test_foreign_and_expired_certificates_are_refused(pki: dict, client: str) -> None:
    result = _handshake(pki, client)
    assert result == "SSLCertVerificationErrorCERTIFICATE_VERIFY_FAILED", result


def test_keys_are_private(pki: dict) -> None:
    assert all(oct(Path(i.key).stat().st_mode)[-3:] == "600" for i in pki.values())


def test_the_ca_crl_revokes_the_revoked_certificate_only(pki: dict) -> None:
    folder = Path(pki["ca"].cert).parent
    der, pem = crl_paths(folder)
    crl = x509.load_der_x509_crl(der.read_bytes())
    assert crl.public_bytes(serialization.Encoding.PEM) == pem.read_bytes()
    ca = x509.load_pem_x509_certificate(Path(pki["ca"].cert).read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    serial = {
        r: x509.load_pem_x509_certificate(Path(pki[r].cert).read_bytes()).serial_number
        for r in ("revoked", "peer")
    }
    assert crl.get_revoked_certificate_by_serial_number(serial["revoked"]) is not None
    assert crl.get_revoked_certificate_by_serial_number(serial["peer"]) is None


def test_a_kept_pki_gets_a_fresh_crl_before_its_own_ends(tmp_path: Path) -> None:
    make_test_pki(tmp_path)
    der = crl_paths(tmp_path)[0]
    assert refresh_test_crl(tmp_path) is False  # days left: kept as it is
    issue_crl(tmp_path, next_update=dt.datetime.now(dt.UTC) + dt.timedelta(hours=3), out=der)
    assert refresh_test_crl(tmp_path) is True
    ends = x509.load_der_x509_crl(der.read_bytes()).next_update_utc
    assert ends is not None and ends - dt.datetime.now(dt.UTC) > dt.timedelta(days=3)


def test_the_whitelist_signer_is_pinned_by_the_test_configuration(pki: dict) -> None:
    folder = Path(pki["ca"].cert).parent
    signer = x509.load_pem_x509_certificate(Path(pki["signer"].cert).read_bytes())
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment  # like ANS's signer (§1.2)
    assert (
        signer.issuer == x509.load_pem_x509_certificate(Path(pki["ca"].cert).read_bytes()).subject
    )
    env = trust_env(folder)
    assert env == {
        "WHITELIST_SIGNER_CA_BUNDLE": str(pki["ca"].cert),
        "WHITELIST_SIGNER_PINS": spki_pin(signer),
    }
    # A renewal keeping the key keeps the pin; a new key does not.
    renewed = issue_whitelist_signer(folder, "signer-renewed", key=Path(pki["signer"].key))
    assert pin_of(renewed.cert) == env["WHITELIST_SIGNER_PINS"]
    assert pin_of(issue_whitelist_signer(folder, "signer-new").cert) != env["WHITELIST_SIGNER_PINS"]
