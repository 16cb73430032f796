"""A test PKI shaped like IGC-Santé, for dev and tests only (real certificates, fake trust).

Produces, under one folder: a test CA, our gateway's certificate, a peer operator's
certificate (its subject is what a whitelist entry names), a certificate from another CA, an
expired certificate and a revoked one, each with its key, in PEM; and the CA's CRL listing the
revoked certificate (``ca.crl``, DER as IGC-Santé publishes it, and ``ca.crl.pem``).
MSSanté operator certificates serve both as SMTP server and client certificates
(../shared/reference/mssante-spec.md §1.3), so leaf certificates carry serverAuth and
clientAuth.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    subject: str  # RFC 4514, as a whitelist entry would name it


def _name(cn: str, org: str, ou: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
    ]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _write(folder: Path, stem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> Issued:
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(cert_path, key_path, cert.subject.rfc4514_string())


def _ca(name: x509.Name, now: dt.datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    name: x509.Name,
    ca: tuple[x509.Certificate, rsa.RSAPrivateKey],
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    dns: list[str],
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    san.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca[1], hashes.SHA256())
    )
    return cert, key


SIGNER_NAME = ("liste-blanche.test", "ANS TEST")  # CN, O of the test whitelist's signer


def _signer_leaf(
    ca: tuple[x509.Certificate, rsa.RSAPrivateKey],
    *,
    key: rsa.RSAPrivateKey | None = None,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A document-signing certificate shaped like the national whitelist's signer
    (../shared/reference/mssante-spec.md §1.2): keyUsage digitalSignature and nonRepudiation,
    extendedKeyUsage emailProtection, no host name."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(*SIGNER_NAME))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(ca[1], hashes.SHA256())
    )
    return cert, key


def issue_whitelist_signer(
    folder: Path,
    stem: str,
    *,
    key: Path | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """A whitelist signer's certificate from the test CA of ``folder``, written as
    ``<stem>.crt``/``<stem>.key``: a new key, or the key of file ``key`` (a renewal that keeps
    the key, so its pin). Valid from ``not_before`` (default: a day ago) to ``not_after``
    (default: 825 days ahead)."""
    now = dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    kept = serialization.load_pem_private_key(key.read_bytes(), password=None) if key else None
    assert kept is None or isinstance(kept, rsa.RSAPrivateKey)
    return _write(
        folder,
        stem,
        *_signer_leaf(
            (ca_cert, ca_key),
            key=kept,
            not_before=not_before or now - dt.timedelta(days=1),
            not_after=not_after or now + dt.timedelta(days=825),
        ),
    )


CRL_DAYS = 4  # nextUpdate of the test CRL: a few days, like a daily-published IGC-Santé CRL


def crl_paths(folder: Path) -> tuple[Path, Path]:
    """The test CA's CRL in ``folder``: (DER, PEM)."""
    return folder / "ca.crl", folder / "ca.crl.pem"


def issue_crl(
    folder: Path,
    *,
    revoked: list[Path] | None = None,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    out: Path | None = None,
) -> x509.CertificateRevocationList:
    """Sign a CRL with the test CA of ``folder``, listing the certificates ``revoked`` (files;
    default: ``revoked.crt``), valid from ``last_update`` (default: an hour ago) to
    ``next_update`` (default: CRL_DAYS ahead). Written to ``out`` (DER, or PEM when the name
    ends in .pem) when given, else to the CA's CRL files (both)."""
    now = dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    last_update = last_update or now - dt.timedelta(hours=1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(last_update)
        .next_update(next_update or now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(int(last_update.timestamp())), critical=False)
    )
    for path in [folder / "revoked.crt"] if revoked is None else revoked:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(last_update - dt.timedelta(hours=1))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    targets = [out] if out else list(crl_paths(folder))
    for target in targets:
        pem = target.name.endswith(".pem")
        target.write_bytes(
            crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)
        )
    return crl


def refresh_test_crl(folder: Path, *, min_days: float = 1.0) -> bool:
    """Re-sign the CA's CRL in an existing test PKI when it is missing or ends within
    ``min_days`` (a PKI kept across ``make run``s outlives its CRL), issuing the revoked
    certificate first when an older PKI lacks it. Returns True when a CRL was written."""
    der, _pem = crl_paths(folder)
    if der.exists():
        current = x509.load_der_x509_crl(der.read_bytes())
        left = (
            current.next_update_utc - dt.datetime.now(dt.UTC) if current.next_update_utc else None
        )
        if left is not None and left > dt.timedelta(days=min_days):
            return False
    if not (folder / "revoked.crt").exists():
        ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        _write(folder, "revoked", *_revoked_leaf((ca_cert, ca_key)))
    issue_crl(folder)
    return True


def _revoked_leaf(
    ca: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The peer operator's identity again, valid and chaining to the CA, but on the CRL: only
    revocation checking tells it from ``peer``."""
    now = dt.datetime.now(dt.UTC)
    return _leaf(
        _name("smtp.operateur-test.fr", "OPERATEUR TEST", "1750000000"),
        ca,
        dns=["smtp.operateur-test.fr"],
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=825),
    )


def make_test_pki(folder: Path) -> dict[str, Issued]:
    """Create the test PKI in ``folder`` (created if needed). Returns what was issued by role:
    ``ca``, ``gateway``, ``peer``, ``foreign`` (signed by another CA), ``expired``, ``signer``
    (of the test whitelist), ``patient`` (the stand-in for patient.mssante.fr), ``revoked``
    (listed in the CA's CRL, written next to them: ``crl_paths``), ``software`` and
    ``software-other`` (client certificates of software owning an APP BAL) and
    ``software-foreign`` (``software``'s name, from another CA)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid = {"not_before": now - dt.timedelta(days=1), "not_after": now + dt.timedelta(days=825)}
    ca = _ca(
        _name(
            "AC TEST IGC-SANTE ELEMENTAIRE ORGANISATIONS", "PORTAIL MSSANTE TEST", "IGC-SANTE TEST"
        ),
        now,
    )
    other_ca = _ca(_name("AC INCONNUE", "AUTRE AUTORITE"), now)
    issued = {"ca": _write(folder, "ca", *ca)}
    issued["gateway"] = _write(
        folder,
        "gateway",
        *_leaf(
            _name("localhost", "PORTAIL MSSANTE TEST", "1690001243"), ca, dns=["localhost"], **valid
        ),
    )
    peer = _name("smtp.operateur-test.fr", "OPERATEUR TEST", "1750000000")
    peer_dns = ["smtp.operateur-test.fr"]
    expired = {"not_before": now - dt.timedelta(days=400), "not_after": now - dt.timedelta(days=35)}
    issued["peer"] = _write(folder, "peer", *_leaf(peer, ca, dns=peer_dns, **valid))
    issued["foreign"] = _write(folder, "foreign", *_leaf(peer, other_ca, dns=peer_dns, **valid))
    issued["expired"] = _write(folder, "expired", *_leaf(peer, ca, dns=peer_dns, **expired))
    # The two-operator trust space (devtools/trust_space.py): the body that signs the test
    # whitelist, and a stand-in for Mon Espace Santé's MSSanté server (patient.mssante.fr).
    issued["signer"] = _write(
        folder,
        "signer",
        *_signer_leaf(ca, not_before=valid["not_before"], not_after=valid["not_after"]),
    )
    issued["patient"] = _write(
        folder,
        "patient",
        *_leaf(
            _name("smtp.patient-test.fr", "MON ESPACE SANTE TEST", "1750000001"),
            ca,
            dns=["smtp.patient-test.fr"],
            **valid,
        ),
    )
    issued["revoked"] = _write(folder, "revoked", *_revoked_leaf(ca))
    # Software that own APP BALs and log in with their certificate (SASL EXTERNAL): two of
    # them, and one with the first one's name from another CA.
    software = _name(SOFTWARE_CN, "EHPAD TEST", "1750000002")
    issued["software"] = _write(folder, "software", *_leaf(software, ca, dns=[], **valid))
    issued["software-other"] = _write(
        folder,
        "software-other",
        *_leaf(_name("automate.labo-test.fr", "LABO TEST", "1750000003"), ca, dns=[], **valid),
    )
    issued["software-foreign"] = _write(
        folder, "software-foreign", *_leaf(software, other_ca, dns=[], **valid)
    )
    issue_crl(folder)
    return issued


SOFTWARE_CN = "dui.ehpad-test.fr"  # the test PKI's software certificate (APP BAL, EXTERNAL)


def issue_software(folder: Path, common_name: str, stem: str) -> Issued:
    """A software's client certificate named ``common_name``, from the test CA of ``folder``
    (made by make_test_pki), written as ``<stem>.crt`` and ``<stem>.key``."""
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    now = dt.datetime.now(dt.UTC)
    return _write(
        folder,
        stem,
        *_leaf(
            _name(common_name, "LOGICIEL TEST"),
            (ca_cert, ca_key),
            dns=[],
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=825),
        ),
    )
