"""APP BALs by certificate on submission (issue 18): the software that owns an APP BAL submits
with SASL EXTERNAL and its TLS client certificate, through the webmail's checks into the same
outbound spool; its certificate opens that BAL only, and unbinding stops the next command."""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from django.test import TestCase

from accounts.audit import Action
from accounts.models import AuditEvent
from mailboxes.console.services.certificates import certificate_bind, certificate_unbind
from mailboxes.models import AppCertificate, OutboundMessage
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned
from tests.mailboxes.software.conftest import client_tls, submission_server

pytestmark = pytest.mark.django_db(transaction=True)

OUTSIDE = "quelquun@gmail.com"


@pytest.fixture
def submission(pki, dovecot, settings) -> Iterator[int]:
    settings.LPS_CLIENT_CA_BUNDLE = str(pki["ca"].cert)
    with submission_server(pki, settings) as port:
        yield port


@pytest.fixture
def apps(dovecot, pki, settings) -> dict[str, Any]:
    settings.LPS_CLIENT_CA_BUNDLE = str(pki["ca"].cert)
    director = make_professional(first_name="Hélène", last_name="Directrice")
    structure = make_structure()
    dui = make_mailbox(structure=structure, kind="APP", local_part="dui", responsible=director)
    lab = make_mailbox(structure=structure, kind="APP", local_part="labo", responsible=director)
    care = make_mailbox(structure=structure, kind="ORG", local_part="soins", responsible=director)
    wait_provisioned(dui.address, lab.address, care.address)
    certificate_bind(mailbox=dui, data=Path(pki["software"].cert).read_bytes(), actor=director)
    return {"dui": dui, "lab": lab, "care": care, "director": director}


def _session(port: int, pki: Any, certificate: str = "software") -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=20)
    smtp.ehlo("dui.ehpad.local")
    smtp.starttls(context=client_tls(pki, certificate))
    smtp.ehlo("dui.ehpad.local")
    return smtp


def _external(smtp: smtplib.SMTP, authzid: str = "") -> tuple[int, bytes]:
    blob = base64.b64encode(authzid.encode()).decode() if authzid else "="
    return smtp.docmd("AUTH", f"EXTERNAL {blob}")


def _message(sender: str, to: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Transmission automatique\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour\r\n"
    ).encode()


@pytest.mark.parametrize("authzid", [False, True], ids=["own-bal", "bal-named"])
def test_the_software_submits_from_its_app_bal(submission, apps, pki, authzid) -> None:
    dui, care = apps["dui"], apps["care"]
    smtp = _session(submission, pki)
    code, _ = _external(smtp, dui.address if authzid else "")
    assert code == 235
    assert smtp.sendmail(dui.address, [care.address], _message(dui.address, care.address)) == {}
    smtp.quit()

    spooled = OutboundMessage.objects.get(origin=OutboundMessage.Origin.SOFTWARE)
    assert spooled.mailbox == dui and spooled.author is None
    sent = message_from_bytes(bytes(spooled.content), policy=policy.default)
    assert sent["From"].addresses[0].addr_spec == dui.address and sent["Sender"] is None
    trace = AuditEvent.objects.get(action=Action.MESSAGE_SENT)
    assert trace.actor is None and "dui.ehpad-test.fr" in trace.actor_label
    login = AuditEvent.objects.get(action=Action.SOFTWARE_LOGIN)
    assert login.details["mechanism"] == "EXTERNAL"


def test_the_certificate_opens_no_other_bal(submission, apps, pki) -> None:
    smtp = _session(submission, pki)
    code, _ = _external(smtp, apps["lab"].address)
    assert code == 535
    code, _ = _external(smtp)
    assert code == 235
    code, reply = smtp.mail(apps["lab"].address)
    smtp.quit()
    assert code == 553 and apps["dui"].address.encode() in reply
    assert AuditEvent.objects.get(action=Action.SOFTWARE_LOGIN_FAILED).error_code == (
        "other_mailbox"
    )


def test_an_unbound_certificate_or_none_is_refused(submission, apps, pki) -> None:
    for certificate in ("software-other", ""):
        smtp = _session(submission, pki, certificate)
        code, _ = _external(smtp)
        smtp.quit()
        assert code == 535
    assert not OutboundMessage.objects.exists()


def test_a_certificate_from_another_ca_fails_the_handshake(submission, apps, pki) -> None:
    smtp = smtplib.SMTP("127.0.0.1", submission, timeout=20)
    smtp.ehlo("dui.ehpad.local")
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        smtp.starttls(context=client_tls(pki, "software-foreign"))
        smtp.ehlo("dui.ehpad.local")
        _external(smtp)
    assert not AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).exists()


def test_recipients_are_judged_as_in_the_webmail(submission, apps, pki) -> None:
    smtp = _session(submission, pki)
    _external(smtp)
    smtp.mail(apps["dui"].address)
    code, reply = smtp.rcpt(OUTSIDE)
    smtp.quit()
    assert code == 550 and OUTSIDE.encode() in reply


def test_unbinding_stops_the_open_session_at_its_next_command(submission, apps, pki) -> None:
    dui, care = apps["dui"], apps["care"]
    smtp = _session(submission, pki)
    _external(smtp)
    assert smtp.sendmail(dui.address, [care.address], _message(dui.address, care.address)) == {}
    bound = AppCertificate.objects.get(mailbox=dui)
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate_unbind(certificate=bound, actor=apps["director"], kick=lambda _address: None)
    code, reply = smtp.mail(dui.address)
    smtp.close()
    assert code == 530 and b"Certificat retire" in reply
    assert OutboundMessage.objects.count() == 1
