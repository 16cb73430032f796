"""The operator whitelist: the real signed file imports with the right counts, anything
untrustworthy is refused and the last good list stays in force."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annuaire.models import WhitelistSyncRun, WhitelistVersion
from annuaire.selectors import whitelist_allows, whitelist_knows_domain
from annuaire.services import whitelist_staleness_check, whitelist_sync
from annuaire.whitelist import dn_key
from tests.factories import SHARED

pytestmark = pytest.mark.django_db

REAL = SHARED / "samples" / "whitelist" / "listeblanchemssante_2025-02-28_signed.xml"
SESAN = "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR"


@pytest.fixture
def tampered(tmp_path: Path) -> Path:
    path = tmp_path / "tampered.xml"
    path.write_bytes(
        REAL.read_bytes().replace(
            b"<Nom>15-20.mssante.fr</Nom>", b"<Nom>pirate.mssante.fr</Nom>", 1
        )
    )
    return path


def test_the_real_signed_list_imports_with_its_counts() -> None:
    run = whitelist_sync(source=str(REAL))

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
    assert version.signer_subject.startswith("CN=alb.mssante.fr")


def test_trust_decisions_use_domain_and_parsed_dn() -> None:
    whitelist_sync(source=str(REAL))

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


def test_a_tampered_list_is_refused_and_the_previous_stays(tampered: Path) -> None:
    whitelist_sync(source=str(REAL))

    run = whitelist_sync(source=str(tampered))

    assert run.result == "failure"
    assert "Signature de la liste blanche invalide" in run.error
    assert WhitelistVersion.objects.filter(is_current=True).count() == 1
    assert whitelist_knows_domain("15-20.mssante.fr") and not whitelist_knows_domain(
        "pirate.mssante.fr"
    )


def test_same_file_again_changes_nothing() -> None:
    first = whitelist_sync(source=str(REAL))
    again = whitelist_sync(source=str(REAL))

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


def test_an_unexpected_signer_is_refused(settings) -> None:
    settings.WHITELIST_SIGNER_SUBJECT = "CN=autre.mssante.fr,O=AUTRE,C=FR"

    run = whitelist_sync(source=str(REAL))

    assert run.result == "failure" and "Signataire inattendu" in run.error


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
    from cryptography import x509
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


def test_staleness_raises_an_alert(caplog) -> None:
    assert not whitelist_staleness_check()  # nothing imported yet
    whitelist_sync(source=str(REAL))
    assert whitelist_staleness_check()
    WhitelistVersion.objects.update(imported_at=timezone.now() - timedelta(days=3))
    with caplog.at_level(logging.ERROR):
        assert not whitelist_staleness_check()
    assert "whitelist is stale" in caplog.text


def test_command_reports_counts_and_fails_loudly(tampered: Path, capsys) -> None:
    call_command("sync_whitelist", str(REAL))
    assert "6494 entrées, 4944 domaines, 391 DN" in capsys.readouterr().out
    with pytest.raises(CommandError, match="la précédente reste en vigueur"):
        call_command("sync_whitelist", str(tampered))
