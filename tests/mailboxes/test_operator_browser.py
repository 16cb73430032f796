"""In Chromium: a member of the operator's staff opens the console from the header, finds a
message stuck in the outbound queue, retries it, then abandons it (the sender gets a bounce);
both are traced. A director has no link and gets a 404."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import AuditEvent, Membership
from mailboxes.models import OutboundDelivery, OutboundMessage
from mailboxes.transport.relay import Recipient, message_spool
from tests.browser import sign_in
from tests.factories import make_membership, make_professional, make_structure

pytestmark = pytest.mark.django_db(transaction=True)


def _stuck_message() -> OutboundMessage:
    message = message_spool(
        origin=OutboundMessage.Origin.WEBMAIL,
        envelope_from="claire.martin@ehpad-les-tilleuls.mssante.fr",
        recipients=[Recipient("dest@chu-exemple.mssante.fr")],
        content=(
            b"From: claire.martin@ehpad-les-tilleuls.mssante.fr\r\n"
            b"To: dest@chu-exemple.mssante.fr\r\nSubject: Bilan\r\n"
            b"Message-ID: <bloque-7@ehpad-les-tilleuls.mssante.fr>\r\n\r\nBonjour\r\n"
        ),
        message_id="<bloque-7@ehpad-les-tilleuls.mssante.fr>",
    )
    OutboundDelivery.objects.filter(message=message).update(
        attempts=3,
        last_reply="421 4.4.2 mx.chu-exemple.fr: connection dropped",
        next_attempt_at=timezone.now() + dt.timedelta(hours=2),
    )
    return message


def test_staff_retry_then_abandon_a_stuck_message(live_server: Any, page: Page) -> None:
    staff = make_professional(first_name="Odile", last_name="Opératrice")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    message = _stuck_message()
    base = live_server.url
    failures: list[str] = []
    page.on(
        "response",
        lambda r: (
            failures.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )

    sign_in(page, base, staff)
    page.goto(f"{base}/")
    page.get_by_role("link", name="Opérateur").click()
    expect(page.get_by_role("heading", name="File sortante")).to_be_visible()
    expect(page.locator("#domaines")).to_contain_text("chu-exemple.mssante.fr")

    page.get_by_label("Message-ID, expéditeur ou destinataire").fill("bloque-7")
    page.get_by_role("button", name="Rechercher").click()
    page.locator("#resultats").get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Message en file")).to_be_visible()
    expect(page.locator("#destinataires")).to_contain_text("421 4.4.2")

    page.get_by_role("button", name="Relancer maintenant").click()
    expect(page.get_by_text("Nouvel essai lancé pour 1 destinataire.")).to_be_visible()
    row = OutboundDelivery.objects.get(message=message)
    assert row.next_attempt_at <= timezone.now()
    assert AuditEvent.objects.filter(action="operator.delivery_retried", actor=staff).exists()

    page.get_by_role("button", name="Abandonner").click()
    expect(page.get_by_text("Envoi abandonné pour 1 destinataire")).to_be_visible()
    expect(page.locator("#destinataires")).to_contain_text("Échec")
    expect(page.get_by_role("button", name="Abandonner")).to_have_count(0)
    assert OutboundDelivery.objects.get(message=message).status == OutboundDelivery.Status.FAILED
    assert AuditEvent.objects.filter(action="operator.delivery_abandoned", actor=staff).exists()
    bounce = OutboundMessage.objects.get(origin=OutboundMessage.Origin.REPORT)
    assert bounce.deliveries.get().recipient == "claire.martin@ehpad-les-tilleuls.mssante.fr"

    for name, heading in (
        ("Réception", "Réception (passerelle)"),
        ("Confiance", "Confiance"),
        ("Annuaire", "Annuaire"),
        ("Structures et quotas", "Structures et quotas"),
    ):
        page.locator(".console-nav").get_by_role("link", name=name).click()
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    assert not failures, failures


def test_a_director_has_no_link_and_gets_404(live_server: Any, page: Page) -> None:
    structure = make_structure()
    director = make_professional(first_name="Hélène", last_name="Directrice")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    message = _stuck_message()
    base = live_server.url

    sign_in(page, base, director)
    page.goto(f"{base}/")
    expect(page.get_by_role("link", name="Console")).to_be_visible()
    expect(page.get_by_role("link", name="Opérateur")).to_have_count(0)
    for url in ("/operateur/", f"/operateur/file/{message.public_id}/", "/operateur/confiance/"):
        response = page.goto(f"{base}{url}")
        assert response is not None and response.status == 404, url
    assert OutboundDelivery.objects.get(message=message).status == OutboundDelivery.Status.QUEUED
