"""The operator's console (/operateur/): staff only, a 404 for everybody else; the outbound queue
with its two actions (retry now, abandon with a bounce), traced; the trust, inbound, directory
and structure pages; quotas set here, refused at local delivery, warned about in the webmail.
Real PostgreSQL, and the private Dovecot where mail is stored."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from django.test import Client
from django.utils import timezone

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import AuditEvent, Membership, User
from annuaire.models import DirectoryImport, WhitelistEntry, WhitelistSyncRun, WhitelistVersion
from annuaire.whitelist import dn_key
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.store.sizes import home_sizes
from mailboxes.transport.quota import MEGABYTE
from mailboxes.transport.relay import Recipient, message_relay, message_spool
from tests.factories import make_mailbox, make_membership, make_professional, make_structure
from tests.mailboxes.conftest import deliver

pytestmark = pytest.mark.django_db

PAGES = ["", "reception/", "confiance/", "annuaire/", "structures/"]


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    session = client.session
    session[AUTH_AT_SESSION_KEY] = int(time.time())
    session.save()
    return client


def make_staff() -> User:
    staff = make_professional(first_name="Odile", last_name="Opératrice")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    return staff


def spool(
    *recipients: str, sender: str = "claire.martin@ehpad-les-tilleuls.mssante.fr"
) -> OutboundMessage:
    content = (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: Résultats\r\n"
        "Message-ID: <file-42@ehpad-les-tilleuls.mssante.fr>\r\n\r\nBonjour\r\n"
    ).encode()
    return message_spool(
        origin=OutboundMessage.Origin.WEBMAIL,
        envelope_from=sender,
        recipients=[Recipient(r) for r in recipients],
        content=content,
        message_id="<file-42@ehpad-les-tilleuls.mssante.fr>",
    )


def test_a_director_a_doctor_and_anonymous_never_see_the_console() -> None:
    structure = make_structure()
    director = make_professional(first_name="Hélène", last_name="Directrice")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    doctor = make_professional()
    message = spool("dest@chu-exemple.mssante.fr")
    box = make_mailbox(structure=structure, owner=doctor)
    urls = [f"/operateur/{p}" for p in PAGES] + [
        f"/operateur/file/{message.public_id}/",
        f"/operateur/structures/{structure.public_id}/",
    ]
    posts = [
        f"/operateur/file/{message.public_id}/relancer/",
        f"/operateur/file/{message.public_id}/abandonner/",
        f"/operateur/bal/{box.public_id}/quota/",
    ]
    for person in (director, doctor):
        client = signed_in(person)
        for url in urls + posts:
            assert client.get(url).status_code == 404, url
            assert client.post(url, {"quota_mo": "1"}).status_code == 404, url
        assert "Opérateur" not in client.get("/bal/").content.decode()
    for url in urls:
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/connexion/")
    assert OutboundDelivery.objects.get().status == OutboundDelivery.Status.QUEUED
    assert Mailbox.objects.get(pk=box.pk).quota_bytes is None
    assert not AuditEvent.objects.filter(action__startswith="operator.").exists()


def test_staff_without_a_second_factor_nor_psc_sign_in_gets_404() -> None:
    """The break-glass account (no national id) must have passed its second factor."""
    account = User.objects.create(username="secours", is_staff=True)
    client = Client()
    client.force_login(account)
    assert client.get("/operateur/").status_code == 404


def test_staff_see_the_queue_by_domain_the_oldest_due_and_find_a_message() -> None:
    staff = make_staff()
    message = spool("dest@chu-exemple.mssante.fr", "autre@clinique.mssante.fr")
    OutboundDelivery.objects.filter(domain="clinique.mssante.fr").update(
        status=OutboundDelivery.Status.RELAYED, delivered_at=timezone.now()
    )
    AuditEvent.objects.create(
        action="gateway.received", result="success", actor_label="CN=mx.chu.fr",
        details={"from": "a@chu-exemple.mssante.fr", "to": ["b@x.fr"], "reply": "250 2.0.0"},
    )  # fmt: skip
    client = signed_in(staff)
    page = client.get("/bal/").content.decode()
    assert 'href="/operateur/"' in page  # the header's link

    queue = client.get("/operateur/").content.decode()
    assert "chu-exemple.mssante.fr" in queue and "clinique.mssante.fr" in queue
    assert "dest@chu-exemple.mssante.fr" in queue  # among the oldest due
    hour = timezone.localtime().strftime("%H")
    assert f"{hour} h : reçus 1, envoyés 1." in queue  # the hourly chart's description

    found = client.get("/operateur/", {"q": "dest@chu"}).content.decode()
    assert f"/operateur/file/{message.public_id}/" in found
    assert "Aucun message ne correspond" in client.get("/operateur/", {"q": "zzz"}).content.decode()

    detail = client.get(f"/operateur/file/{message.public_id}/").content.decode()
    assert "Relancer maintenant" in detail and "Abandonner" in detail
    assert "Transmis à l&#x27;opérateur du destinataire" in detail


def test_retry_now_makes_the_queued_rows_due_and_is_traced() -> None:
    staff = make_staff()
    message = spool("dest@chu-exemple.mssante.fr")
    later = timezone.now() + dt.timedelta(hours=3)
    OutboundDelivery.objects.update(next_attempt_at=later, attempts=2, last_reply="451 4.3.0 x")

    response = signed_in(staff).post(f"/operateur/file/{message.public_id}/relancer/")

    assert response.status_code == 302
    row = OutboundDelivery.objects.get()
    assert row.next_attempt_at <= timezone.now() and row.attempts == 2
    event = AuditEvent.objects.get(action="operator.delivery_retried")
    assert event.actor == staff and event.target_id == message.message_id
    assert event.details["recipients"] == 1


def test_abandon_fails_the_queued_rows_and_bounces_to_the_sender() -> None:
    staff = make_staff()
    message = spool("dest@chu-exemple.mssante.fr", "autre@clinique.mssante.fr")
    OutboundDelivery.objects.filter(domain="clinique.mssante.fr").update(
        status=OutboundDelivery.Status.RELAYED
    )
    OutboundDelivery.objects.filter(domain="chu-exemple.mssante.fr").update(
        last_reply="421 4.4.2 Connection dropped", attempts=4
    )

    client = signed_in(staff)
    response = client.post(f"/operateur/file/{message.public_id}/abandonner/", follow=True)

    assert "Envoi abandonné pour 1 destinataire" in response.content.decode()
    abandoned = OutboundDelivery.objects.get(message=message, domain="chu-exemple.mssante.fr")
    assert abandoned.status == OutboundDelivery.Status.FAILED
    assert abandoned.last_reply.startswith("Abandoned by the operator; last reply: 421")
    bounce = OutboundMessage.objects.get(origin=OutboundMessage.Origin.REPORT)
    assert bounce.envelope_from == ""
    assert list(bounce.deliveries.values_list("recipient", flat=True)) == [
        "claire.martin@ehpad-les-tilleuls.mssante.fr"
    ]
    report = email.message_from_bytes(bytes(bounce.content), policy=email.policy.default)
    human, status, returned = report.iter_parts()
    assert "Votre message pour <dest@chu-exemple.mssante.fr> n'a pas pu être remis" in (
        human.get_content()
    )
    machine = status.as_string()
    assert "Status: 5.0.0" in machine and "Final-Recipient: rfc822; dest@chu-exemple" in machine
    assert "autre@clinique" not in machine  # relayed already: not in the bounce
    assert returned.get_content_type() == "message/rfc822"
    assert bytes(OutboundMessage.objects.get(pk=message.pk).content) == b""  # spool cleared
    event = AuditEvent.objects.get(action="operator.delivery_abandoned")
    assert event.actor == staff and event.details["bounce"] == str(bounce.public_id)
    # Nothing left to abandon: a clear refusal, no second bounce.
    again = client.post(f"/operateur/file/{message.public_id}/abandonner/")
    assert again.status_code == 409
    assert OutboundMessage.objects.filter(origin=OutboundMessage.Origin.REPORT).count() == 1


def test_abandon_sends_no_bounce_for_notify_never_nor_the_null_sender() -> None:
    staff = make_staff()
    message = message_spool(
        origin=OutboundMessage.Origin.WEBMAIL,
        envelope_from="claire.martin@ehpad-les-tilleuls.mssante.fr",
        recipients=[Recipient("dest@chu-exemple.mssante.fr", notify="NEVER")],
        content=b"Subject: x\r\n\r\nx\r\n",
    )
    report = message_spool(
        origin=OutboundMessage.Origin.REPORT,
        envelope_from="",
        recipients=[Recipient("x@chu-exemple.mssante.fr")],
        content=b"Subject: y\r\n\r\ny\r\n",
    )
    client = signed_in(staff)
    for spooled in (message, report):
        assert client.post(f"/operateur/file/{spooled.public_id}/abandonner/").status_code == 302
    assert OutboundDelivery.objects.filter(status="failed").count() == 2
    assert OutboundMessage.objects.count() == 2  # no bounce spooled


def _certificate(path: Path, days: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mx-{days}.exemple.fr")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days, hours=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))


def _whitelist(domains: dict[str, str], current: bool, at: str) -> WhitelistVersion:
    version = WhitelistVersion.objects.create(
        generated_at=at, source="test", sha256=at[:10], signer_subject="CN=ANS",
        domains=len(domains), dns=len(set(domains.values())), is_current=current,
    )  # fmt: skip
    for domain, dn in domains.items():
        WhitelistEntry.objects.create(version=version, domain=domain, dn=dn, dn_key=dn_key(dn))
    return version


def test_trust_shows_our_certificates_days_left_the_whitelist_diff_and_its_syncs(
    tmp_path: Path, settings: Any
) -> None:
    settings.GATEWAY_CERT = str(tmp_path / "gateway.crt")
    settings.RELAY_CERT = str(tmp_path / "relay.crt")
    _certificate(tmp_path / "gateway.crt", 12)
    _certificate(tmp_path / "relay.crt", 200)
    _whitelist(
        {"ancien.mssante.fr": "CN=mx.ancien.fr", "chu.mssante.fr": "CN=mx.chu.fr"},
        current=False,
        at="2026-11-01T00:00:00Z",
    )
    _whitelist(
        {"chu.mssante.fr": "CN=mx2.chu.fr", "nouveau.mssante.fr": "CN=mx.nouveau.fr"},
        current=True,
        at="2026-12-01T00:00:00Z",
    )
    WhitelistSyncRun.objects.create(source="https://x", result="failure", error="Signature refusée")

    page = signed_in(make_staff()).get("/operateur/confiance/").content.decode()

    assert "CN=mx-12.exemple.fr" in page and "CN=mx-200.exemple.fr" in page
    assert page.count("expire dans moins de 30 jours") == 1  # the gateway's, not the relay's
    assert "Domaine ajouté : <code>nouveau.mssante.fr</code>" in page
    assert "Domaine retiré : <code>ancien.mssante.fr</code>" in page
    assert "Certificat ajouté : <code>chu.mssante.fr</code> — <code>CN=mx2.chu.fr</code>" in page
    assert "Certificat retiré : <code>chu.mssante.fr</code> — <code>CN=mx.chu.fr</code>" in page
    assert "Signature refusée" in page


def test_trust_says_when_a_certificate_file_is_missing(settings: Any, tmp_path: Path) -> None:
    settings.GATEWAY_CERT = str(tmp_path / "absent.crt")
    page = signed_in(make_staff()).get("/operateur/confiance/").content.decode()
    assert "Lecture impossible" in page


def test_directory_shows_the_imports_with_their_counts_and_errors() -> None:
    DirectoryImport.objects.create(
        source="extraction.csv", result="success", rows_read=1200, added=7, rejected=1,
        rejects=[{"line": 42, "reason": "adresse invalide"}],
    )  # fmt: skip
    DirectoryImport.objects.create(source="x", result="failure", error="Fichier tronqué")
    page = signed_in(make_staff()).get("/operateur/annuaire/").content.decode()
    assert "1200" in page and "ligne 42 : adresse invalide" in page
    assert "Fichier tronqué" in page


def test_the_operator_sets_a_quota_in_megabytes_traced(dovecot: Any) -> None:
    structure = make_structure()
    box = make_mailbox(structure=structure, owner=make_professional())
    client = signed_in(make_staff())

    page = client.get(f"/operateur/structures/{structure.public_id}/").content.decode()
    assert box.address in page and "sans quota" in page
    response = client.post(f"/operateur/bal/{box.public_id}/quota/", {"quota_mo": "1,5"})

    assert response.status_code == 302
    assert Mailbox.objects.get(pk=box.pk).quota_bytes == int(1.5 * MEGABYTE)
    event = AuditEvent.objects.get(action="mailbox.quota_set")
    assert event.details == {"address": box.address, "before": None, "after": int(1.5 * MEGABYTE)}
    assert event.structure_id == structure.pk
    refused = client.post(f"/operateur/bal/{box.public_id}/quota/", {"quota_mo": "-3"})
    assert refused.status_code == 400
    assert "mégaoctets" in refused.content.decode()
    client.post(f"/operateur/bal/{box.public_id}/quota/", {"quota_mo": ""})
    assert Mailbox.objects.get(pk=box.pk).quota_bytes is None


def _fill(box: Mailbox, percent: int) -> int:
    """Deliver a message into ``box`` and set its quota so that it is ``percent`` full."""
    deliver(box.address, b"Subject: bilan\r\n\r\n" + b"x" * 20_000 + b"\r\n")
    used = home_sizes([box.address])[box.address]
    assert used
    box.quota_bytes = used * 100 // percent
    box.save(update_fields=["quota_bytes"])
    return used


def test_a_local_delivery_to_a_full_bal_waits_with_4_2_2(dovecot: Any) -> None:
    structure = make_structure()
    box = make_mailbox(structure=structure, owner=make_professional())
    _fill(box, 100)
    message = spool(box.address, sender="secretariat@ehpad-les-tilleuls.mssante.fr")

    message_relay(public_id=str(message.public_id))

    row = OutboundDelivery.objects.get(message=message)
    assert row.status == OutboundDelivery.Status.QUEUED and row.attempts == 1
    assert row.last_reply == "Mailbox full: over its quota"


def test_the_webmail_warns_from_90_percent(dovecot: Any) -> None:
    structure = make_structure()
    doctor = make_professional()
    box = make_mailbox(structure=structure, owner=doctor)
    _fill(box, 92)
    page = signed_in(doctor).get(f"/bal/{box.public_id}/?dossier=INBOX").content.decode()
    assert "Votre BAL est pleine à 92 %" in page

    box.quota_bytes = None
    box.save(update_fields=["quota_bytes"])
    page = signed_in(doctor).get(f"/bal/{box.public_id}/?dossier=INBOX").content.decode()
    assert "Votre BAL est pleine" not in page


def test_the_director_sets_the_quota_on_the_bal_page_and_sees_the_usage(dovecot: Any) -> None:
    structure = make_structure()
    director = make_professional(first_name="Hélène", last_name="Directrice")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    box = make_mailbox(structure=structure, owner=make_professional())
    page = f"/console/{structure.public_id}/bal/{box.public_id}/"
    client = signed_in(director)

    response = client.post(page + "quota/", {"quota_mo": "250"}, follow=True)

    assert "Le quota de la BAL est de 250 Mo." in response.content.decode()
    assert Mailbox.objects.get(pk=box.pk).quota_bytes == 250 * MEGABYTE
    assert AuditEvent.objects.get(action="mailbox.quota_set").actor == director
    assert 'value="250"' in client.get(page).content.decode()
    # Another structure's director cannot.
    other = make_professional(first_name="Paul", last_name="Autre")
    clinique = make_structure(name="Clinique", finess="690002365", domain="clinique.mssante.fr")
    make_membership(other, clinique, Membership.Role.DIRECTOR)
    assert signed_in(other).post(page + "quota/", {"quota_mo": "1"}).status_code == 404
    assert Mailbox.objects.get(pk=box.pk).quota_bytes == 250 * MEGABYTE
