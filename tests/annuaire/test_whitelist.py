"""The operator whitelist: the real signed file imports with the right counts, anything
untrustworthy is refused and the last good list stays in force.

Trust is a key, not a name: the signer's certificate must chain to the configured IGC-Santé
CA and its key must be pinned, at the current time. The real national file is verified with
the shipped defaults (the IGC-Santé chain of deploy/igc-sante/ and ANS's pin) at a time its
signer's certificate was valid: it expired on 2026-08-23. The other tests use its content
signed again by the test PKI's signer, with the test configuration (its CA, its key pinned).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import logging
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import AuditEvent
from annuaire.models import WhitelistSyncRun, WhitelistVersion
from annuaire.selectors import whitelist_allows, whitelist_knows_domain
from annuaire.services import whitelist_staleness_check, whitelist_sync
from annuaire.whitelist import WhitelistError, dn_key, parse_signed
from devtools.pki import Issued, issue_whitelist_signer, make_test_pki
from devtools.whitelist_sign import Listed, pin_of, resign, trust_env, write_signed_whitelist
from tests.factories import SHARED

pytestmark = pytest.mark.django_db

REAL = SHARED / "samples" / "whitelist" / "listeblanchemssante_2025-02-28_signed.xml"
SESAN = "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"
# The real signer's certificate (CN=alb.mssante.fr) is valid from 2023-08-23 13:54:23 UTC to
# 2026-08-23 13:54:23 UTC.
REAL_SIGNER_END = dt.datetime(2026, 8, 23, 13, 54, 23, tzinfo=dt.UTC)
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def trusted(settings, pki: dict[str, Issued]):
    """The test configuration: the test CA is the chain's anchor, the test signer's key is
    pinned (devtools.whitelist_sign.trust_env, as `make run` and the trust space use it)."""
    env = trust_env(pki["ca"].cert.parent)
    settings.WHITELIST_SIGNER_CA_BUNDLE = env["WHITELIST_SIGNER_CA_BUNDLE"]
    settings.WHITELIST_SIGNER_PINS = env["WHITELIST_SIGNER_PINS"].split(",")
    return settings


@pytest.fixture(scope="module")
def national(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Issued]) -> Path:
    """The real national list's content, signed by the test PKI's signer."""
    path = tmp_path_factory.mktemp("national") / "liste.xml"
    path.write_bytes(resign(REAL.read_bytes(), cert=pki["signer"].cert, key=pki["signer"].key))
    return path


@pytest.fixture
def tampered(tmp_path: Path, national: Path) -> Path:
    path = tmp_path / "tampered.xml"
    path.write_bytes(
        national.read_bytes().replace(
            b"<Nom>15-20.mssante.fr</Nom>", b"<Nom>pirate.mssante.fr</Nom>", 1
        )
    )
    return path


def _self_made(
    folder: Path, stem: str, *, like: Path, key: Path | None = None, valid_from: dt.datetime = NOW
) -> Issued:
    """What anyone can make: a certificate with the subject and issuer DNs of ``like``, the
    same profile, signed by its own key (the key of ``key`` if given, else a new one)."""
    model = x509.load_pem_x509_certificate(like.read_bytes())
    if key is None:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        private = loaded
    builder = (
        x509.CertificateBuilder()
        .subject_name(model.subject)
        .issuer_name(model.issuer)
        .public_key(private.public_key())
        .serial_number(model.serial_number)
        .not_valid_before(valid_from - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
    )
    for extension in model.extensions:
        if isinstance(extension.value, x509.KeyUsage | x509.ExtendedKeyUsage):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    cert = builder.sign(private, hashes.SHA256())
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path, cert.subject.rfc4514_string())


def _real_signer(folder: Path) -> Path:
    """The certificate carried by the real national file (CN=alb.mssante.fr), as PEM."""
    found = re.search(rb"<X509Certificate>(.*?)</X509Certificate>", REAL.read_bytes(), re.S)
    assert found
    der = base64.b64decode(re.sub(rb"&#13;|\s", b"", found.group(1)))
    path = folder / "alb.mssante.fr.crt"
    path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
    return path


def _small_list(path: Path, signer: Issued, *domains: str) -> Path:
    write_signed_whitelist(
        path, [Listed(d, SESAN) for d in domains], cert=signer.cert, key=signer.key
    )
    return path


# --- The real national file: the IGC-Santé chain and ANS's key, shipped as the defaults ------


def test_the_real_list_verifies_with_the_shipped_chain_and_pin(settings) -> None:
    whitelist = parse_signed(
        REAL.read_bytes(),
        pins=settings.WHITELIST_SIGNER_PINS,
        ca_bundle=settings.WHITELIST_SIGNER_CA_BUNDLE,
        at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
        tolerance=dt.timedelta(hours=settings.WHITELIST_SIGNER_TOLERANCE_HOURS),
    )

    assert len(whitelist.entries) == 6494 and len(whitelist.domains) == 4944
    assert whitelist.signer_subject.startswith("CN=alb.mssante.fr")
    assert whitelist.generated_at.isoformat() == "2025-02-28T15:42:07+00:00"


@pytest.mark.parametrize(
    ("after_expiry", "accepted"),
    [(dt.timedelta(hours=23), True), (dt.timedelta(hours=25), False)],
)
def test_the_real_signer_is_checked_at_the_time_given_with_the_tolerance(
    settings, after_expiry: dt.timedelta, accepted: bool
) -> None:
    def parse() -> object:
        return parse_signed(
            REAL.read_bytes(),
            pins=settings.WHITELIST_SIGNER_PINS,
            ca_bundle=settings.WHITELIST_SIGNER_CA_BUNDLE,
            at=REAL_SIGNER_END + after_expiry,
            tolerance=dt.timedelta(hours=24),
        )

    if accepted:
        parse()
    else:
        with pytest.raises(WhitelistError, match="n'est pas valide à cette date"):
            parse()


def test_the_real_list_is_refused_now_that_its_signer_expired() -> None:
    assert timezone.now() > REAL_SIGNER_END + dt.timedelta(days=2)

    run = whitelist_sync(source=str(REAL))

    assert run.result == "failure"
    assert "n'est pas valide à cette date" in run.error and "23/08/2026" in run.error
    assert not WhitelistVersion.objects.exists()


def test_a_forged_national_list_copying_both_dns_is_refused(tmp_path: Path) -> None:
    # A self-made certificate with ANS's signer subject and the IGC-Santé issuer DN, valid
    # from before the list's date to next year: the subject and issuer checks let it through.
    forged = _self_made(
        tmp_path,
        "faux",
        like=_real_signer(tmp_path),
        valid_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )
    path = tmp_path / "liste.xml"
    path.write_bytes(resign(REAL.read_bytes(), cert=forged.cert, key=forged.key))

    run = whitelist_sync(source=str(path))

    assert run.result == "failure"
    assert "ne remonte pas à une autorité de confiance" in run.error
    assert not WhitelistVersion.objects.exists()


# --- Trust: a chain and a key, with the test configuration ------------------------------------


def test_a_forged_list_is_refused_the_list_in_force_stays_and_the_refusal_is_traced(
    trusted, pki: dict[str, Issued], national: Path, tmp_path: Path, caplog
) -> None:
    assert whitelist_sync(source=str(national)).result == "success"
    in_force = WhitelistVersion.objects.get(is_current=True)
    forged = _self_made(tmp_path, "faux", like=pki["signer"].cert)
    path = _small_list(tmp_path / "faux.xml", forged, "pirate.mssante.fr", "15-20.mssante.fr")

    with caplog.at_level(logging.ERROR):
        run = whitelist_sync(source=str(path))

    assert run.result == "failure" and "ne remonte pas à une autorité de confiance" in run.error
    assert WhitelistVersion.objects.get(is_current=True) == in_force
    assert in_force.entry_set.count() == 6494
    assert whitelist_allows("15-20.mssante.fr", SESAN)
    assert not whitelist_knows_domain("pirate.mssante.fr")
    trace = AuditEvent.objects.filter(action="annuaire.whitelist_sync").latest("id")
    assert trace.result == "failure" and trace.error_code == "whitelist_refused"
    assert trace.details["source"] == str(path) and "liste-blanche.test" in trace.details["error"]
    assert "whitelist sync failed" in caplog.text


def test_a_key_that_chains_to_the_root_but_is_not_pinned_is_refused(
    trusted, pki: dict[str, Issued], tmp_path: Path
) -> None:
    other = issue_whitelist_signer(pki["ca"].cert.parent, "signer-other")

    run = whitelist_sync(source=str(_small_list(tmp_path / "liste.xml", other, "a.mssante.fr")))

    assert run.result == "failure"
    assert "Clé du signataire non épinglée" in run.error and pin_of(other.cert) in run.error
    assert not WhitelistVersion.objects.exists()


def test_the_pinned_key_in_a_self_made_certificate_is_refused(
    trusted, pki: dict[str, Issued], tmp_path: Path
) -> None:
    copy = _self_made(tmp_path, "copie", like=pki["signer"].cert, key=pki["signer"].key)
    assert pin_of(copy.cert) == pin_of(pki["signer"].cert)

    run = whitelist_sync(source=str(_small_list(tmp_path / "liste.xml", copy, "a.mssante.fr")))

    assert run.result == "failure" and "ne remonte pas à une autorité de confiance" in run.error


def test_lists_signed_by_a_pinned_key_are_accepted_and_a_rollover_is_one_setting(
    trusted, pki: dict[str, Issued], tmp_path: Path
) -> None:
    folder = pki["ca"].cert.parent
    run = whitelist_sync(source=str(_small_list(tmp_path / "1.xml", pki["signer"], "a.mssante.fr")))
    assert run.result == "success", run.error
    assert WhitelistVersion.objects.get(is_current=True).signer_subject.startswith(
        "CN=liste-blanche.test"
    )
    # A renewed certificate keeping the key: nothing to change.
    renewed = issue_whitelist_signer(folder, "signer-renewed", key=pki["signer"].key)
    run = whitelist_sync(source=str(_small_list(tmp_path / "2.xml", renewed, "b.mssante.fr")))
    assert run.result == "success", run.error
    # A new key: refused until it is pinned next to the old one.
    new = issue_whitelist_signer(folder, "signer-new")
    third = _small_list(tmp_path / "3.xml", new, "c.mssante.fr")
    assert whitelist_sync(source=str(third)).result == "failure"
    trusted.WHITELIST_SIGNER_PINS = [*trusted.WHITELIST_SIGNER_PINS, pin_of(new.cert)]
    run = whitelist_sync(source=str(third))
    assert run.result == "success", run.error
    assert whitelist_knows_domain("c.mssante.fr") and not whitelist_knows_domain("b.mssante.fr")


@pytest.mark.parametrize(
    ("not_before", "not_after", "tolerance_hours", "accepted"),
    [
        (-400 * 24, -2, 24, True),  # expired two hours ago: within the tolerance
        (-400 * 24, -2, 1, False),  # ... beyond it
        (-400 * 24, -30 * 24, 24, False),  # expired a month ago
        (0.2, 400 * 24, 24, True),  # valid in 12 minutes: a clock behind ANS's
        (48, 400 * 24, 24, False),  # valid in two days
    ],
)
def test_the_signer_certificate_is_checked_now_with_a_tolerance(
    trusted,
    pki: dict[str, Issued],
    tmp_path: Path,
    not_before: float,
    not_after: float,
    tolerance_hours: int,
    accepted: bool,
) -> None:
    trusted.WHITELIST_SIGNER_TOLERANCE_HOURS = tolerance_hours
    signer = issue_whitelist_signer(
        pki["ca"].cert.parent,
        f"signer-{not_before}-{not_after}",
        key=pki["signer"].key,  # the pinned key: only the time decides
        not_before=NOW + dt.timedelta(hours=not_before),
        not_after=NOW + dt.timedelta(hours=not_after),
    )

    run = whitelist_sync(source=str(_small_list(tmp_path / "liste.xml", signer, "a.mssante.fr")))

    assert (run.result == "success") is accepted, run.error
    if not accepted:
        assert "n'est pas valide à cette date" in run.error


# --- The HTTPS download: the IGC-Santé bundle, never the default CAs --------------------------


@pytest.fixture
def https_server(pki: dict[str, Issued], tmp_path: Path) -> Iterator[str]:
    """An HTTPS server with a certificate of the test CA serving ``tmp_path / "www"``."""
    (tmp_path / "www").mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki["gateway"].cert), str(pki["gateway"].key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_download_is_verified_against_the_configured_bundle_only(
    trusted, pki: dict[str, Issued], https_server: str, tmp_path: Path, monkeypatch
) -> None:
    _small_list(tmp_path / "www" / "liste.xml", pki["signer"], "a.mssante.fr")
    # The environment's CA bundles (honoured by requests and OpenSSL by default) know the
    # server's CA; the default WHITELIST_CA_BUNDLE, IGC-Santé, does not.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, str(pki["ca"].cert))

    refused = whitelist_sync(source=f"{https_server}/liste.xml")

    assert refused.result == "failure" and "Téléchargement impossible" in refused.error
    assert "CERTIFICATE_VERIFY_FAILED" in refused.error
    trusted.WHITELIST_CA_BUNDLE = str(pki["ca"].cert)
    accepted = whitelist_sync(source=f"{https_server}/liste.xml")
    assert accepted.result == "success", accepted.error


def test_an_unreadable_trust_bundle_refuses_every_list(
    trusted, pki: dict[str, Issued], tmp_path: Path
) -> None:
    trusted.WHITELIST_SIGNER_CA_BUNDLE = str(tmp_path / "absent.pem")

    run = whitelist_sync(source=str(_small_list(tmp_path / "l.xml", pki["signer"], "a.mssante.fr")))

    assert run.result == "failure" and "Autorités de confiance" in run.error
    assert not WhitelistVersion.objects.exists()


def test_misconfigured_trust_is_caught_at_start(settings, tmp_path: Path) -> None:
    assert not {"mssante.E006", "mssante.E007"} & {m.id for m in run_checks()}
    settings.WHITELIST_SIGNER_PINS = ["CN=alb.mssante.fr"]
    settings.WHITELIST_SIGNER_CA_BUNDLE = str(tmp_path / "absent.pem")
    settings.WHITELIST_CA_BUNDLE = str(tmp_path / "absent.pem")

    ids = [m.id for m in run_checks()]

    assert ids.count("mssante.E006") == 1 and ids.count("mssante.E007") == 2


# --- The national content: counts, decisions, refusals, runs ----------------------------------


def test_the_national_list_imports_with_its_counts(
    trusted, pki: dict[str, Issued], national: Path
) -> None:
    run = whitelist_sync(source=str(national))

    assert run.result == "success", run.error
    assert run.stats == {
        "entries": 6494,
        "domains": 4944,
        "dns": 391,
        "certificates": 382,
        "added": 4944,
        "removed": 0,
        "rejected": [],
    }
    version = WhitelistVersion.objects.get(is_current=True)
    assert version.generated_at.isoformat() == "2025-02-28T15:42:07+00:00"
    trace = AuditEvent.objects.get(action="annuaire.whitelist_sync")
    assert trace.result == "success"
    assert trace.details["signer_pin"] == pin_of(pki["signer"].cert)


def test_trust_decisions_use_domain_and_parsed_dn(trusted, national: Path) -> None:
    whitelist_sync(source=str(national))

    assert whitelist_allows("15-20.mssante.fr", SESAN)
    assert whitelist_allows(
        "15-20.MSSANTE.FR",
        "CN=smtp-1.sesan.santnet.com, OU=1750048886, O=GIP SESAN, ST=Paris (75), C=FR",
    )
    assert not whitelist_allows(
        "15-20.mssante.fr", "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=AUTRE,ST=Paris (75),C=FR"
    )
    assert not whitelist_allows("medecin.mssante.fr", SESAN)  # a listed DN, but for other domains
    assert whitelist_knows_domain("mssante.apicrypt.org")  # trust is not a *.mssante.fr suffix
    assert not whitelist_knows_domain("inconnu.mssante.fr")
    assert not whitelist_allows("15-20.mssante.fr", "pas un DN")


def test_a_tampered_list_is_refused_and_the_previous_stays(
    trusted, national: Path, tampered: Path
) -> None:
    whitelist_sync(source=str(national))

    run = whitelist_sync(source=str(tampered))

    assert run.result == "failure"
    assert "Signature de la liste blanche invalide" in run.error
    assert WhitelistVersion.objects.filter(is_current=True).count() == 1
    assert whitelist_knows_domain("15-20.mssante.fr") and not whitelist_knows_domain(
        "pirate.mssante.fr"
    )


def test_same_file_again_changes_nothing(trusted, national: Path) -> None:
    first = whitelist_sync(source=str(national))
    again = whitelist_sync(source=str(national))

    assert again.result == "unchanged" and again.version == first.version
    assert WhitelistVersion.objects.count() == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"pas du xml", "n'est pas un XML valide"),
        (b"<autre/>", "élément racine inattendu"),
        (
            b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGeneration>2025-02-28T15:42:07Z'
            b"</DateDeGeneration><ListeDomaines/></ListeBlancheMSSante>",
            "n'est pas signée",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
            "racine inattendu",
        ),
    ],
)
def test_documents_that_are_not_a_signed_list_are_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "liste.xml"
    path.write_bytes(content)

    run = whitelist_sync(source=str(path))

    assert run.result == "failure" and message in run.error
    assert not WhitelistVersion.objects.exists()


def test_missing_file_and_plain_http_are_clear_failures(tmp_path: Path) -> None:
    assert "Lecture impossible" in whitelist_sync(source=str(tmp_path / "absent.xml")).error
    assert "HTTPS uniquement" in whitelist_sync(source="http://exemple.invalid/liste.xml").error
    assert WhitelistSyncRun.objects.filter(result="failure").count() == 2


def test_dn_key_ignores_separators_spacing_case_and_quotes() -> None:
    assert dn_key("CN=a.fr, O=X  Y,C=FR") == dn_key("cn=A.FR,o=x y,c=fr")
    assert dn_key('CN=mss.ch-cadillac.fr,O="C.H. DE CADILLAC",C=FR') == dn_key(
        "CN=mss.ch-cadillac.fr,O=C.H. DE CADILLAC,C=FR"
    )
    assert dn_key(r"CN=a.fr,O=Dupont\, Durand,C=FR") == dn_key('CN=a.fr,O="Dupont, Durand",C=FR')
    assert dn_key("CN=a.fr,O=X,C=FR") != dn_key("CN=a.fr,O=Z,C=FR")
    with pytest.raises(ValueError):
        dn_key('CN=a.fr,O="ouvert')


def test_a_certificate_subject_matches_its_published_dn() -> None:
    from cryptography.x509.oid import NameOID

    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "smtp-1.sesan.santnet.com"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "1750048886"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GIP SESAN"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Paris (75)"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        ]
    )
    assert dn_key(name) == dn_key(SESAN)


def test_staleness_raises_an_alert(trusted, national: Path, caplog) -> None:
    assert not whitelist_staleness_check()  # nothing imported yet
    whitelist_sync(source=str(national))
    assert whitelist_staleness_check()
    WhitelistVersion.objects.update(imported_at=timezone.now() - dt.timedelta(days=3))
    with caplog.at_level(logging.ERROR):
        assert not whitelist_staleness_check()
    assert "whitelist is stale" in caplog.text


def test_command_reports_counts_and_fails_loudly(
    trusted, national: Path, tampered: Path, capsys
) -> None:
    call_command("sync_whitelist", str(national))
    assert "6494 entrées, 4944 domaines, 391 DN" in capsys.readouterr().out
    with pytest.raises(CommandError, match="la précédente reste en vigueur"):
        call_command("sync_whitelist", str(tampered))
