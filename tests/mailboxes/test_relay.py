"""The outbound relay against local TLS SMTP servers standing for other operators (accepting,
4xx, 5xx, TLS failing, wrong DN), with the DSN each outcome produces, and the local retry
spool of the gateway. Real TLS (generated PKI), real Dovecot, real PostgreSQL."""

from __future__ import annotations

import asyncio
import email
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from django.conf import settings
from django.utils import timezone

from accounts.models import AuditEvent
from devtools.pki import Issued
from mailboxes.console.services.lifecycle import dovecot_users_sync
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.transport import dsn
from mailboxes.transport.gateway.handler import GatewayHandler
from mailboxes.transport.gateway.server import smtp_kwargs, tls_context
from mailboxes.transport.relay import Recipient, message_relay, message_spool, relay_sweep
from tests.factories import make_professional
from tests.mailboxes.conftest import _free_port, inbox, wait_provisioned
from tests.mailboxes.test_gateway import _Controller, wait_for_banner

pytestmark = pytest.mark.django_db(transaction=True)
Status = OutboundDelivery.Status
REMOTE = "dr.durand@operateur-test.mssante.fr"
RAW = (
    b"From: Claire Martin <claire.martin@ehpad-les-tilleuls.mssante.fr>\r\n"
    b"To: <dr.durand@operateur-test.mssante.fr>\r\n"
    b"Subject: Compte rendu de sortie\r\n"
    b"Message-ID: <relay-1@ehpad-les-tilleuls.mssante.fr>\r\n"
    b"X-MSS-NIL: 12345\r\n\r\nBonjour,\r\n.ligne qui commence par un point\r\n"
)


@dataclass
class Peer:
    """What the other operator's MX says and what it received."""

    rcpt_reply: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 Ok: queued"
    received: list[Envelope] = field(default_factory=list)
    dsn: list[dict[str, Any]] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", "250 HELP"]

    async def handle_MAIL(self, server, session, envelope, address, options):
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.rcpt_reply.get(address, "250 2.1.5 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session: Session, envelope: Envelope):
        if self.data_reply.startswith("250"):
            self.received.append(envelope)
            self.dsn.append(getattr(envelope, "dsn", {}))
        return self.data_reply


def _start_peer(pki: dict[str, Issued], cert: str, handler: Any) -> tuple[Controller, int]:
    warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
    context = tls_context(
        cert=str(pki[cert].cert), key=str(pki[cert].key), ca_bundle=str(pki["ca"].cert)
    )
    kwargs = smtp_kwargs(context)
    kwargs.pop("hostname")
    port = _free_port()
    controller = _Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    wait_for_banner(port)
    return controller, port


@pytest.fixture
def relay_settings(pki: dict[str, Issued], settings) -> Any:
    settings.RELAY_CERT = str(pki["gateway"].cert)
    settings.RELAY_KEY = str(pki["gateway"].key)
    settings.RELAY_CA_BUNDLE = str(pki["ca"].cert)
    settings.RELAY_HOSTNAME = "mx.ehpad-les-tilleuls.mssante.fr"
    settings.RELAY_TIMEOUT_SECONDS = 10
    return settings


def _peer_fixture(pki, relay_settings, cert: str) -> Iterator[Peer]:
    handler = Peer()
    controller, port = _start_peer(pki, cert, handler)
    relay_settings.RELAY_ROUTES = [f"operateur-test.mssante.fr=127.0.0.1:{port}"]
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def peer(pki, relay_settings, listed) -> Iterator[Peer]:
    """A listed operator whose certificate matches the whitelist entry of its domain."""
    yield from _peer_fixture(pki, relay_settings, "peer")


def _send(box: Mailbox, to: list[Recipient], content: bytes = RAW, **kw: Any) -> OutboundMessage:
    return message_spool(
        origin=OutboundMessage.Origin.WEBMAIL,
        envelope_from=box.address,
        recipients=to,
        content=content,
        message_id="<relay-1@ehpad-les-tilleuls.mssante.fr>",
        mailbox=box,
        **kw,
    )


def _reports_for(address: str) -> list[OutboundMessage]:
    return list(
        OutboundMessage.objects.filter(
            origin=OutboundMessage.Origin.REPORT, deliveries__recipient=address
        )
    )


def _relay_reports(address: str) -> list[email.message.Message]:
    """Deliver the reports spooled for ``address`` (a BAL we host) and read them back: from
    the INBOX (failures, delays) and from « Accusés » (successes, store.lmtp.folder_for)."""
    for report in _reports_for(address):
        message_relay(public_id=str(report.public_id))
    stored = inbox(address) + inbox(address, "Accuses")
    return [email.message_from_bytes(raw) for raw in stored]


def _status_fields(report: email.message.Message) -> dict[str, str]:
    part = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    fields: dict[str, str] = {}
    for block in part.get_payload():
        assert isinstance(block, email.message.Message)
        fields.update({k: str(v) for k, v in block.items()})
    return fields


def test_accepted_by_the_peer_is_relayed_with_its_dsn_parameters(peer: Peer, box: Mailbox) -> None:
    message = _send(
        box,
        [Recipient(REMOTE, notify="SUCCESS,FAILURE", orcpt=f"rfc822;{REMOTE}")],
        ret="HDRS",
        envid="ENV-42",
    )
    assert message_relay(public_id=str(message.public_id)) == 1

    row = OutboundDelivery.objects.get(message=message)
    assert row.status == Status.RELAYED and row.delivered_at is not None
    assert row.last_reply.startswith("250")
    [envelope] = peer.received
    assert envelope.mail_from == box.address and envelope.rcpt_tos == [REMOTE]
    content = envelope.original_content or b""
    assert content.startswith(RAW.split(b"\r\n")[0])
    assert b"\r\n.ligne qui commence" in content  # dot-stuffing undone by the peer
    assert peer.dsn[0]["mail"] == {"RET": "HDRS", "ENVID": "ENV-42"}
    assert peer.dsn[0]["rcpt"][REMOTE] == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": f"rfc822;{REMOTE}"}
    message.refresh_from_db()
    assert bytes(message.content) == b""  # final everywhere: the spool copy is gone
    assert AuditEvent.objects.filter(action="relay.relayed", target_id=message.message_id).exists()
    assert not _reports_for(box.address)  # relayed: the next operator reports delivery


@pytest.mark.parametrize(
    ("original", "wire"),
    [
        (
            "dr.durand+cardio@operateur-test.mssante.fr",
            "dr.durand+2Bcardio@operateur-test.mssante.fr",
        ),
        ("a=b@operateur-test.mssante.fr", "a+3Db@operateur-test.mssante.fr"),
        (
            "dr durand\x01\x7f@operateur-test.mssante.fr",
            "dr+20durand+01+7F@operateur-test.mssante.fr",
        ),
        ("x\r\nRSET@operateur-test.mssante.fr", "x+0D+0ARSET@operateur-test.mssante.fr"),
        ("rené@operateur-test.mssante.fr", "ren+C3+A9@operateur-test.mssante.fr"),
    ],
    ids=["plus", "equals", "controls", "crlf", "utf-8"],
)
def test_orcpt_and_envid_go_to_the_peer_as_xtext(
    peer: Peer, box: Mailbox, original: str, wire: str
) -> None:
    message = _send(
        box,
        [Recipient(REMOTE, notify="FAILURE", orcpt=f"rfc822;{original}")],
        envid=f"env={original}",
    )

    message_relay(public_id=str(message.public_id))

    assert OutboundDelivery.objects.get(message=message).status == Status.RELAYED
    [envelope] = peer.received
    assert envelope.rcpt_tos == [REMOTE]  # one recipient, no command slipped in
    assert peer.dsn[0]["rcpt"][REMOTE] == {"NOTIFY": "FAILURE", "ORCPT": f"rfc822;{wire}"}
    assert peer.dsn[0]["mail"]["ENVID"] == f"env+3D{wire}"


def test_a_notify_that_is_not_rfc_3461_is_not_sent(peer: Peer, box: Mailbox) -> None:
    message = _send(box, [Recipient(REMOTE, notify="SUCCESS\r\nRSET")])

    message_relay(public_id=str(message.public_id))

    assert OutboundDelivery.objects.get(message=message).status == Status.RELAYED
    assert "NOTIFY" not in peer.dsn[0]["rcpt"][REMOTE]


@pytest.mark.parametrize(
    ("cipher", "relayed"),
    [("ECDHE-RSA-AES128-SHA256", False), ("ECDHE-RSA-AES256-GCM-SHA384", True)],
)
def test_the_relay_offers_only_the_gateway_cipher_policy(
    pki, relay_settings, listed, box: Mailbox, cipher: str, relayed: bool
) -> None:
    """A peer that only speaks TLS 1.2 with a CBC suite (no AEAD, which Python's default client
    would accept) is not given the mail; one with an ECDHE AEAD suite is."""
    handler = Peer()
    warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
    context = tls_context(
        cert=str(pki["peer"].cert), key=str(pki["peer"].key), ca_bundle=str(pki["ca"].cert)
    )
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    kwargs = smtp_kwargs(context)
    kwargs.pop("hostname")
    port = _free_port()
    controller = _Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    wait_for_banner(port)
    relay_settings.RELAY_ROUTES = [f"operateur-test.mssante.fr=127.0.0.1:{port}"]
    try:
        message = _send(box, [Recipient(REMOTE)])
        message_relay(public_id=str(message.public_id))
    finally:
        controller.stop()

    row = OutboundDelivery.objects.get(message=message)
    assert (row.status == Status.RELAYED) is relayed
    assert len(handler.received) == int(relayed)
    if not relayed:
        assert row.status == Status.QUEUED and row.last_reply.startswith("127.0.0.1:")


def test_a_permanent_refusal_bounces_into_the_sender_inbox_in_french_and_english(
    peer: Peer, box: Mailbox
) -> None:
    peer.rcpt_reply[REMOTE] = "550 5.1.1 <dr.durand@operateur-test.mssante.fr>: unknown user"
    message = _send(box, [Recipient(REMOTE)])
    message_relay(public_id=str(message.public_id))

    row = OutboundDelivery.objects.get(message=message)
    assert row.status == Status.FAILED and "unknown user" in row.last_reply
    [report] = _relay_reports(box.address)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert str(report["Subject"]) == "Non remis : Compte rendu de sortie"
    human = next(p for p in report.walk() if p.get_content_type() == "text/plain")
    payload = human.get_payload(decode=True)
    assert isinstance(payload, bytes)
    text = payload.decode()
    assert "n'a pas pu être remis" in text and "could not be delivered" in text
    fields = _status_fields(report)
    assert fields["Action"] == "failed" and fields["Status"] == "5.1.1"
    assert fields["Final-Recipient"] == f"rfc822; {REMOTE}"
    assert "unknown user" in fields["Diagnostic-Code"]
    assert not peer.received


def test_a_temporary_refusal_is_retried_later_then_bounces_when_the_lifetime_is_over(
    peer: Peer, box: Mailbox
) -> None:
    peer.data_reply = "451 4.3.0 Try again later"
    message = _send(box, [Recipient(REMOTE)])
    message_relay(public_id=str(message.public_id))

    row = OutboundDelivery.objects.get(message=message)
    assert row.status == Status.QUEUED and row.attempts == 1
    assert timedelta(seconds=50) < row.next_attempt_at - timezone.now() <= timedelta(seconds=60)
    assert not _reports_for(box.address)
    assert message_relay(public_id=str(message.public_id)) == 0  # not due yet: nothing sent

    OutboundDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    OutboundMessage.objects.filter(pk=message.pk).update(expires_at=timezone.now())
    message_relay(public_id=str(message.public_id))
    row.refresh_from_db()
    assert row.status == Status.FAILED and row.attempts == 2
    [report] = _relay_reports(box.address)
    assert _status_fields(report)["Status"] == "4.4.7"


def _reason_matches(cert: str, reply: str) -> bool:
    if cert == "foreign":  # another CA: the TLS handshake fails
        return "CERTIFICATE_VERIFY_FAILED" in reply or "certificate" in reply
    # Our own gateway certificate chains to the CA but is listed for autre.mssante.fr only.
    return "not listed for operateur-test.mssante.fr" in reply


@pytest.mark.parametrize("cert", ["foreign", "gateway"])
def test_a_peer_without_the_certificate_listed_for_the_domain_is_not_given_the_mail(
    cert: str, pki, relay_settings, listed, box: Mailbox
) -> None:
    for handler in _peer_fixture(pki, relay_settings, cert):
        message = _send(box, [Recipient(REMOTE)])
        message_relay(public_id=str(message.public_id))
        row = OutboundDelivery.objects.get(message=message)
        assert row.status == Status.QUEUED
        assert _reason_matches(cert, row.last_reply)
        assert not handler.received


def test_a_domain_outside_the_trust_space_fails_at_once(peer: Peer, box: Mailbox) -> None:
    message = _send(box, [Recipient("jean.dupont@gmail.com")])
    message_relay(public_id=str(message.public_id))
    row = OutboundDelivery.objects.get(message=message)
    assert row.status == Status.FAILED and "hors espace de confiance" in row.last_reply
    [report] = _relay_reports(box.address)
    assert _status_fields(report)["Status"] == "5.7.1"


def test_a_bal_we_host_is_delivered_over_lmtp_and_reported_when_asked(
    peer: Peer, box: Mailbox
) -> None:
    sender = Mailbox.objects.create(
        structure=box.structure,
        domain=box.domain,
        local_part="secretariat",
        address="secretariat@" + box.domain.domain,
        kind="ORG",
        display_name="Secrétariat",
        responsible=make_professional(),
    )
    dovecot_users_sync()
    wait_provisioned(sender.address)
    message = _send(sender, [Recipient(box.address, notify="SUCCESS")])
    message_relay(public_id=str(message.public_id))

    row = OutboundDelivery.objects.get(message=message)
    assert row.local and row.status == Status.DELIVERED
    [copy] = inbox(box.address)
    assert b"Subject: Compte rendu de sortie" in copy
    [report] = _relay_reports(sender.address)
    assert str(report["Subject"]).startswith("Remis")
    assert _status_fields(report)["Action"] == "delivered"
    assert inbox(sender.address) == []  # a success is filed in « Accusés », not the INBOX
    assert not peer.received


def test_a_report_adds_no_header_whatever_the_original_and_the_envelope_say() -> None:
    # The original's subject decodes (twice) to « a CRLF Bcc: ... »; the envelope values hold
    # raw line breaks (as decoded from xtext).
    nested = "=?utf-8?b?PT91dGYtOD9xP2E9MEQ9MEFCY2M6X3hAZXZpbC5leGFtcGxlPz0=?="
    original = RAW.replace(b"Compte rendu de sortie", nested.encode())
    report = dsn.build(
        dsn.Report(
            to="claire.martin@ehpad-les-tilleuls.mssante.fr",
            original=original,
            envid="ENV-1\r\nX-Evil: envid",
            recipients=[
                dsn.ReportRecipient(
                    final_recipient=REMOTE,
                    action="failed",
                    status="5.1.1",
                    diagnostic="smtp; 550 5.1.1 unknown",
                    original_recipient=f"rfc822;{REMOTE}\r\nX-Evil: orcpt",
                    remote_mta="mx.exemple\nX-Evil: mta",
                )
            ],
        )
    )

    parsed = email.message_from_bytes(report)
    assert len(parsed.get_all("Subject") or []) == 1
    assert "Bcc" not in parsed and "x@evil.example" in str(parsed["Subject"])
    fields = _status_fields(parsed)
    assert not [name for name in fields if name.lower() == "x-evil"], fields
    assert fields["Original-Recipient"].startswith(f"rfc822;{REMOTE}")


def test_a_report_that_fails_is_never_answered_with_another_report(
    peer: Peer, box: Mailbox
) -> None:
    peer.rcpt_reply[REMOTE] = "550 5.1.1 unknown user"
    report = message_spool(
        origin=OutboundMessage.Origin.REPORT,
        envelope_from="",
        recipients=[Recipient(REMOTE)],
        content=RAW,
    )
    message_relay(public_id=str(report.public_id))
    assert OutboundDelivery.objects.get(message=report).status == Status.FAILED
    assert OutboundMessage.objects.count() == 1  # RFC 5321 §4.5.5: no bounce to <>


def test_the_sweep_requeues_what_a_dead_worker_had_claimed(peer: Peer, box: Mailbox) -> None:
    message = _send(box, [Recipient(REMOTE)])
    OutboundDelivery.objects.filter(message=message).update(
        status=Status.SENDING,
        claim_token="00000000-0000-0000-0000-000000000001",
        claimed_until=timezone.now() - timedelta(seconds=1),
    )
    assert message_relay(public_id=str(message.public_id)) == 0  # claimed: not sent twice
    assert relay_sweep() == 1
    assert OutboundDelivery.objects.get(message=message).status == Status.QUEUED
    message_relay(public_id=str(message.public_id))
    assert OutboundDelivery.objects.get(message=message).status == Status.RELAYED
    assert len(peer.received) == 1


@pytest.mark.parametrize("stored_before_dying", [True, False])
def test_a_local_delivery_resumed_after_its_worker_died_is_stored_once(
    box: Mailbox, stored_before_dying: bool
) -> None:
    """The worker handed the message to Dovecot, then died before recording it (or before
    Dovecot had it): the sweep marks the row interrupted, and the resumed attempt looks in
    the INBOX first. Dovecot itself keeps every copy it is given."""
    from tests.mailboxes.conftest import deliver

    message = _send(box, [Recipient(box.address)])
    if stored_before_dying:
        deliver(box.address, RAW, sender=box.address)
    OutboundDelivery.objects.filter(message=message).update(
        status=Status.SENDING,
        claim_token="00000000-0000-0000-0000-000000000002",
        claimed_until=timezone.now() - timedelta(seconds=1),
    )
    assert relay_sweep() == 1
    message_relay(public_id=str(message.public_id))
    row = OutboundDelivery.objects.get(message=message)
    assert row.local and row.status == Status.DELIVERED
    assert len(inbox(box.address)) == 1


@pytest.mark.parametrize("differs", ["content", "sender"])
def test_a_resumed_local_delivery_is_not_taken_for_another_message_with_its_message_id(
    box: Mailbox, differs: str
) -> None:
    """The INBOX already holds a message with this Message-ID, another text or another
    envelope sender (issue 15): the resumed attempt must store this one, not take it as done."""
    from tests.mailboxes.conftest import deliver

    if differs == "content":
        deliver(box.address, RAW.replace(b"Bonjour,", b"Un autre message,"), sender=box.address)
    else:
        deliver(box.address, RAW, sender="quelqu-un@autre-operateur.mssante.fr")
    message = _send(box, [Recipient(box.address)])
    OutboundDelivery.objects.filter(message=message).update(
        status=Status.SENDING,
        claim_token="00000000-0000-0000-0000-000000000003",
        claimed_until=timezone.now() - timedelta(seconds=1),
    )
    assert relay_sweep() == 1
    message_relay(public_id=str(message.public_id))
    assert OutboundDelivery.objects.get(message=message).status == Status.DELIVERED
    assert len(inbox(box.address)) == 2


# --- The gateway's side: success reports and recipients Dovecot does not know yet ---------------


@pytest.fixture
def gateway_port(pki, listed, settings) -> Iterator[int]:
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    warnings.filterwarnings("ignore", message="tls_context.verify_mode not in")
    context = tls_context(
        cert=str(pki["gateway"].cert), key=str(pki["gateway"].key), ca_bundle=str(pki["ca"].cert)
    )
    kwargs = smtp_kwargs(context)
    kwargs.pop("hostname")
    port = _free_port()
    controller = _Controller(GatewayHandler(), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def _peer_client(port: int, pki: dict[str, Issued]) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    context.check_hostname = False
    context.load_cert_chain(str(pki["peer"].cert), str(pki["peer"].key))
    smtp.ehlo("smtp.operateur-test.fr")
    smtp.starttls(context=context)
    smtp.ehlo("smtp.operateur-test.fr")
    return smtp


def test_notify_success_on_inbound_mail_spools_a_delivered_report_to_the_sender(
    gateway_port: int, pki, box: Mailbox
) -> None:
    sender = "labo@operateur-test.mssante.fr"
    with _peer_client(gateway_port, pki) as smtp:
        smtp.mail(sender, ["ENVID=LAB-7", "RET=HDRS"])
        smtp.rcpt(box.address, ["NOTIFY=SUCCESS", f"ORCPT=rfc822;{box.address}"])
        code, reply = smtp.data(RAW)
    assert code == 250, reply
    [report] = _reports_for(sender)
    parsed = email.message_from_bytes(bytes(report.content))
    fields = _status_fields(parsed)
    assert fields["Action"] == "delivered" and fields["Original-Envelope-Id"] == "LAB-7"
    assert fields["Final-Recipient"] == f"rfc822; {box.address}"
    returned = [p.get_content_type() for p in parsed.walk()]
    assert "text/rfc822-headers" in returned and "message/rfc822" not in returned
    assert report.envelope_from == ""


def test_the_gateway_keeps_orcpt_and_envid_decoded_and_reports_them_so(
    gateway_port: int, pki, box: Mailbox
) -> None:
    """Received as xtext, kept as text: the report's Original-Recipient is the address itself
    (RFC 3461 §6.3, RFC 3464 §2.3.1); a value that is not printable text once decoded (RFC
    3461 §4.2) is dropped."""
    sender = "labo@operateur-test.mssante.fr"
    with _peer_client(gateway_port, pki) as smtp:
        smtp.mail(sender, ["ENVID=lot+2B7"])
        smtp.rcpt(box.address, ["NOTIFY=SUCCESS", "ORCPT=rfc822;Claire+2BMartin@ancien.fr"])
        assert smtp.data(RAW)[0] == 250
        smtp.mail(sender, ["ENVID=x+0D+0AX-Evil:+201"])
        smtp.rcpt(box.address, ["NOTIFY=SUCCESS", "ORCPT=rfc822;a+0D+0AX-Evil:+202@x.fr"])
        assert smtp.data(RAW.replace(b"relay-1@", b"relay-2@"))[0] == 250

    first, second = sorted(_reports_for(sender), key=lambda report: report.pk)
    fields = _status_fields(email.message_from_bytes(bytes(first.content)))
    assert fields["Original-Recipient"] == "rfc822;Claire+Martin@ancien.fr"
    assert fields["Original-Envelope-Id"] == "lot+7"
    fields = _status_fields(email.message_from_bytes(bytes(second.content)))
    assert "Original-Recipient" not in fields and "Original-Envelope-Id" not in fields
    assert "X-Evil" not in fields


def _not_in_dovecot_yet(box: Mailbox, local_part: str) -> Mailbox:
    """An ORG BAL in the database whose users-file entry Dovecot has not got yet."""
    return Mailbox.objects.create(
        structure=box.structure,
        domain=box.domain,
        local_part=local_part,
        address=f"{local_part}@{box.domain.domain}",
        kind="ORG",
        display_name=local_part.title(),
        responsible=make_professional(),
    )


def test_a_bal_dovecot_does_not_know_yet_gets_the_mail_on_the_next_attempt_without_duplicates(
    gateway_port: int, pki, box: Mailbox, settings
) -> None:
    late = _not_in_dovecot_yet(box, "accueil")
    with _peer_client(gateway_port, pki) as smtp:
        smtp.mail("labo@operateur-test.mssante.fr")
        smtp.rcpt(box.address)
        smtp.rcpt(late.address)
        code, reply = smtp.data(RAW)
    assert code == 250 and b"queued" in reply
    assert len(inbox(box.address)) == 1
    [row] = OutboundDelivery.objects.filter(recipient=late.address)
    assert row.local and row.status == Status.QUEUED

    dovecot_users_sync()
    wait_provisioned(late.address)
    message_relay(public_id=str(row.message.public_id))
    row.refresh_from_db()
    assert row.status == Status.DELIVERED
    assert len(inbox(late.address)) == 1 and len(inbox(box.address)) == 1


def test_nothing_delivered_answers_451_so_the_peer_keeps_the_message(
    gateway_port: int, pki, box: Mailbox
) -> None:
    late = _not_in_dovecot_yet(box, "standard")
    with _peer_client(gateway_port, pki) as smtp:
        smtp.mail("labo@operateur-test.mssante.fr")
        smtp.rcpt(late.address)
        code, _ = smtp.data(RAW)
    assert code == 451
    assert not OutboundMessage.objects.exists()


# --- A real Celery worker, killed in the middle of a delivery ------------------------------------


class SlowPeer(Peer):
    """Holds the RCPT reply until released: the worker is inside the SMTP session."""

    def __init__(self) -> None:
        super().__init__()
        self.in_session = threading.Event()
        self.hold = True

    async def handle_RCPT(self, server, session, envelope, address, options):
        self.in_session.set()
        while self.hold:
            await asyncio.sleep(0.05)
        return await super().handle_RCPT(server, session, envelope, address, options)


def test_a_worker_killed_mid_delivery_loses_nothing_and_sends_once(
    pki, relay_settings, listed, box: Mailbox
) -> None:
    handler = SlowPeer()
    controller, port = _start_peer(pki, "peer", handler)
    relay_settings.RELAY_ROUTES = [f"operateur-test.mssante.fr=127.0.0.1:{port}"]
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "PORTAL_ENV": "test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "RELAY_ROUTES": relay_settings.RELAY_ROUTES[0],
        "RELAY_CERT": relay_settings.RELAY_CERT,
        "RELAY_KEY": relay_settings.RELAY_KEY,
        "RELAY_CA_BUNDLE": relay_settings.RELAY_CA_BUNDLE,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mssante_portal", "worker", "-Q", "relay",
         "--pool=solo", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        message = _send(box, [Recipient(REMOTE)])  # enqueued after commit, to Redis
        assert handler.in_session.wait(60), "the worker never connected"
        worker.kill()  # SIGKILL while the peer has not accepted anything
        worker.wait(10)
        row = OutboundDelivery.objects.get(message=message)
        assert row.status == Status.SENDING  # claimed by the dead worker
        assert row.claimed_until is not None
        handler.hold = False

        assert relay_sweep(now=row.claimed_until + timedelta(seconds=1)) == 1
        assert OutboundDelivery.objects.get(message=message).status == Status.QUEUED
        message_relay(public_id=str(message.public_id))  # what the re-queued task does
    finally:
        if worker.poll() is None:
            worker.kill()
        controller.stop()
    final = OutboundDelivery.objects.get(message=message)
    assert final.status == Status.RELAYED, final.last_reply
    assert len(handler.received) == 1


def test_reports_from_the_recipient_operator_mark_delivered_then_read(
    gateway_port: int, pki, box: Mailbox
) -> None:
    message = _send(box, [Recipient(REMOTE, notify="SUCCESS,FAILURE")], envid="ENV-REPORT-1")
    OutboundDelivery.objects.filter(message=message).update(status=Status.RELAYED)
    dsn = (
        f"From: MAILER-DAEMON@operateur-test.mssante.fr\r\nTo: {box.address}\r\n"
        "Subject: Remis\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nRemis.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Original-Envelope-Id: ENV-REPORT-1\r\n"
        "Reporting-MTA: dns; mx.operateur-test.mssante.fr\r\n\r\n"
        f"Original-Recipient: rfc822;{REMOTE}\r\nFinal-Recipient: rfc822; {REMOTE}\r\n"
        "Action: delivered\r\nStatus: 2.0.0\r\n\r\n--b--\r\n"
    )
    mdn = (
        f"From: {REMOTE}\r\nTo: {box.address}\r\nSubject: Lu\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="m"\r\n\r\n'
        "--m\r\nContent-Type: text/plain\r\n\r\nLu.\r\n"
        "--m\r\nContent-Type: message/disposition-notification\r\n\r\n"
        f"Final-Recipient: rfc822; {REMOTE}\r\nOriginal-Message-ID: {message.message_id}\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n--m--\r\n"
    )
    with _peer_client(gateway_port, pki) as smtp:
        smtp.sendmail("", [box.address], dsn.encode())
        row = OutboundDelivery.objects.get(message=message)
        assert row.status == Status.DELIVERED and row.read_at is None
        smtp.sendmail(REMOTE, [box.address], mdn.encode())
    row.refresh_from_db()
    assert row.read_at is not None
    # The reports themselves reach the BAL too, filed in « Accusés » rather than the INBOX.
    assert (len(inbox(box.address)), len(inbox(box.address, "Accuses"))) == (0, 2)


class CountingPeer(Peer):
    def __init__(self) -> None:
        super().__init__()
        self.ehlo = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo += 1
        return await super().handle_EHLO(server, session, envelope, hostname, responses)


def test_a_verified_session_is_reused_and_the_dn_is_checked_each_time(
    pki, relay_settings, listed, box: Mailbox
) -> None:
    from annuaire.models import WhitelistEntry
    from mailboxes.transport.smtp import connections_close

    handler = CountingPeer()
    controller, port = _start_peer(pki, "peer", handler)
    relay_settings.RELAY_ROUTES = [f"operateur-test.mssante.fr=127.0.0.1:{port}"]
    try:
        for _ in range(3):
            message_relay(public_id=str(_send(box, [Recipient(REMOTE)]).public_id))
        assert len(handler.received) == 3
        assert handler.ehlo == 2  # one connection: EHLO, STARTTLS, EHLO; then RSET between

        # The operator's certificate is no longer listed: the open session is not used.
        WhitelistEntry.objects.filter(domain="operateur-test.mssante.fr").update(dn_key="cn=autre")
        message = _send(box, [Recipient(REMOTE)])
        message_relay(public_id=str(message.public_id))
        row = OutboundDelivery.objects.get(message=message)
        assert row.status == Status.QUEUED and "not listed" in row.last_reply
        assert len(handler.received) == 3
    finally:
        connections_close()
        controller.stop()


def test_a_pooled_session_the_peer_closed_is_replaced(
    pki, relay_settings, listed, box: Mailbox
) -> None:
    from mailboxes.transport import smtp

    handler = CountingPeer()
    controller, port = _start_peer(pki, "peer", handler)
    relay_settings.RELAY_ROUTES = [f"operateur-test.mssante.fr=127.0.0.1:{port}"]
    try:
        message_relay(public_id=str(_send(box, [Recipient(REMOTE)]).public_id))
        [conn] = smtp._pool().values()
        assert conn.smtp.sock is not None
        conn.smtp.sock.shutdown(socket.SHUT_RDWR)  # the peer (or the network) dropped it
        message = _send(box, [Recipient(REMOTE)])
        message_relay(public_id=str(message.public_id))
        assert OutboundDelivery.objects.get(message=message).status == Status.RELAYED
        assert len(handler.received) == 2 and handler.ehlo == 4
    finally:
        smtp.connections_close()
        controller.stop()


def test_the_domains_of_one_message_are_delivered_in_parallel_each_to_its_operator(
    pki, relay_settings, listed, box: Mailbox
) -> None:
    first, second = Peer(), Peer()
    c1, p1 = _start_peer(pki, "peer", first)
    c2, p2 = _start_peer(pki, "gateway", second)  # the certificate listed for autre.mssante.fr
    relay_settings.RELAY_ROUTES = [
        f"operateur-test.mssante.fr=127.0.0.1:{p1}",
        f"autre.mssante.fr=127.0.0.1:{p2}",
    ]
    try:
        message = _send(
            box,
            [
                Recipient(REMOTE),
                Recipient("secretariat@autre.mssante.fr"),
                Recipient("x@gmail.com"),
            ],
        )
        message_relay(public_id=str(message.public_id))
    finally:
        c1.stop()
        c2.stop()
    rows = {r.recipient: r for r in OutboundDelivery.objects.filter(message=message)}
    assert rows[REMOTE].status == Status.RELAYED
    assert rows["secretariat@autre.mssante.fr"].status == Status.RELAYED
    assert rows["x@gmail.com"].status == Status.FAILED  # outside the trust space, at once
    assert [e.rcpt_tos for e in first.received] == [[REMOTE]]
    assert [e.rcpt_tos for e in second.received] == [["secretariat@autre.mssante.fr"]]


def test_a_report_is_believed_only_from_the_operator_of_the_recipient_domain(
    pki, listed, box: Mailbox
) -> None:
    from pathlib import Path as _Path

    from cryptography import x509

    from mailboxes.transport.delivery_reports import report_apply

    message = _send(box, [Recipient(REMOTE, notify="SUCCESS,FAILURE")], envid="ENV-FORGED-1")
    OutboundDelivery.objects.filter(message=message).update(status=Status.RELAYED)
    dsn = (
        f"From: MAILER-DAEMON@autre.mssante.fr\r\nTo: {box.address}\r\nSubject: x\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nEchec.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Original-Envelope-Id: ENV-FORGED-1\r\nReporting-MTA: dns; mx.autre.mssante.fr\r\n\r\n"
        f"Final-Recipient: rfc822; {REMOTE}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
    ).encode()

    def subject(name: str) -> x509.Name:
        return x509.load_pem_x509_certificate(_Path(pki[name].cert).read_bytes()).subject

    # « autre.mssante.fr » is listed with another certificate: it cannot speak for REMOTE.
    assert report_apply(dsn, reporter=subject("gateway")) == 0
    assert OutboundDelivery.objects.get(message=message).status == Status.RELAYED
    assert report_apply(dsn, reporter=subject("peer")) == 1
    assert OutboundDelivery.objects.get(message=message).status == Status.FAILED


def test_domains_served_by_the_same_peer_share_one_transaction_each_dn_checked(
    pki, relay_settings, listed, box: Mailbox
) -> None:
    from annuaire.models import WhitelistEntry, WhitelistVersion
    from annuaire.whitelist import dn_key

    WhitelistEntry.objects.create(
        version=WhitelistVersion.objects.get(is_current=True),
        domain="troisieme.mssante.fr",
        dn=pki["peer"].subject,
        dn_key=dn_key(pki["peer"].subject),
    )
    handler = Peer()
    controller, port = _start_peer(pki, "peer", handler)
    relay_settings.RELAY_ROUTES = [  # one operator's MX for three domains
        f"{domain}=127.0.0.1:{port}"
        for domain in ("operateur-test.mssante.fr", "troisieme.mssante.fr", "autre.mssante.fr")
    ]
    third, other = "x@troisieme.mssante.fr", "y@autre.mssante.fr"
    try:
        message = _send(box, [Recipient(REMOTE), Recipient(third), Recipient(other)])
        assert message_relay(public_id=str(message.public_id)) == 3
    finally:
        controller.stop()
    assert [e.rcpt_tos for e in handler.received] == [[REMOTE, third]]
    rows = {r.recipient: r for r in OutboundDelivery.objects.filter(message=message)}
    assert rows[REMOTE].status == rows[third].status == Status.RELAYED
    # autre.mssante.fr lists another certificate: this peer may not take its mail.
    assert rows[other].status == Status.QUEUED
    assert "not listed for autre.mssante.fr" in rows[other].last_reply
    traces = AuditEvent.objects.filter(action__startswith="relay.").order_by("details__domain")
    assert [(t.action, t.details["domain"], t.details["recipients"]) for t in traces] == [
        ("relay.queued", "autre.mssante.fr", 1),
        ("relay.relayed", "operateur-test.mssante.fr", 1),
        ("relay.relayed", "troisieme.mssante.fr", 1),
    ]


def test_a_task_also_takes_other_due_messages_and_each_is_sent_once(
    peer: Peer, box: Mailbox
) -> None:
    from mailboxes.transport.relay import BATCH_ROWS

    messages = [_send(box, [Recipient(REMOTE, notify="NEVER")]) for _ in range(3)]
    assert message_relay(public_id=str(messages[1].public_id), also_due=BATCH_ROWS) == 3
    for message in messages:  # their own tasks come next: nothing left to send
        assert message_relay(public_id=str(message.public_id), also_due=BATCH_ROWS) == 0
    assert len(peer.received) == 3
    assert set(OutboundDelivery.objects.values_list("status", flat=True)) == {Status.RELAYED}
    assert AuditEvent.objects.filter(action="relay.relayed").count() == 3
    assert not OutboundMessage.objects.exclude(content=b"").exists()  # spool copies dropped


def test_a_spooled_message_without_message_id_is_not_taken_for_the_one_its_body_quotes(
    gateway_port: int, pki, box: Mailbox
) -> None:
    """A message with no Message-ID field quotes another one in its body; one of its BALs
    gets it from the retry spool, in an attempt cut short: the resumed attempt must not take
    the quoted message, already in that INBOX, for it (issue 15)."""
    from tests.mailboxes.conftest import deliver

    late = _not_in_dovecot_yet(box, "accueil")
    quoting = (
        b"From: Labo <labo@operateur-test.mssante.fr>\r\nTo: <accueil@ehpad.fr>\r\n"
        b"Subject: Tr: Compte rendu de sortie\r\n\r\n----- Message d'origine -----\r\n" + RAW
    )
    with _peer_client(gateway_port, pki) as smtp:
        smtp.mail("labo@operateur-test.mssante.fr")
        smtp.rcpt(box.address)
        smtp.rcpt(late.address)
        code, reply = smtp.data(quoting)
    assert code == 250 and b"queued" in reply
    dovecot_users_sync()
    wait_provisioned(late.address)
    deliver(late.address, RAW)  # the quoted message, there already
    OutboundDelivery.objects.filter(recipient=late.address).update(
        status=Status.SENDING,
        claim_token="00000000-0000-0000-0000-000000000004",
        claimed_until=timezone.now() - timedelta(seconds=1),
    )
    assert relay_sweep() == 1
    [row] = OutboundDelivery.objects.filter(recipient=late.address)
    message_relay(public_id=str(row.message.public_id))
    row.refresh_from_db()
    assert row.status == Status.DELIVERED
    assert len(inbox(late.address)) == 2


def _waiting_tasks() -> list[str]:
    """The message public ids of the relay tasks waiting in the broker (queue « relay »)."""
    import ast
    import json

    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return [
        ast.literal_eval(json.loads(raw)["headers"]["argsrepr"])[0]
        for raw in broker.lrange("relay", 0, -1)
    ]


def test_one_relay_task_waits_for_new_messages_and_takes_them_all(peer: Peer, box: Mailbox) -> None:
    """A message spooled while a relay task is still waiting adds no task: that task, when it
    runs, takes every message committed before it started, then leaves the next one waiting."""
    import redis

    from mailboxes.transport.relay import BATCH_ROWS

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("relay")
    messages = [_send(box, [Recipient(REMOTE, notify="NEVER")]) for _ in range(3)]
    assert _waiting_tasks() == [str(messages[0].public_id)]
    assert message_relay(public_id=str(messages[0].public_id), also_due=BATCH_ROWS) == 3
    assert len(peer.received) == 3
    # The task took a batch: the next one waits, for what a batch could not hold.
    assert len(_waiting_tasks()) == 2
    later = _send(box, [Recipient(REMOTE, notify="NEVER")])
    assert len(_waiting_tasks()) == 2  # the waiting task will take it
    assert message_relay(public_id=str(messages[0].public_id), also_due=BATCH_ROWS) == 1
    assert OutboundDelivery.objects.get(message=later).status == Status.RELAYED
    # Nothing waits any more: the next message enqueues its own task.
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("relay")
    assert message_relay(public_id=str(messages[0].public_id), also_due=BATCH_ROWS) == 0
    last = _send(box, [Recipient(REMOTE, notify="NEVER")])
    assert _waiting_tasks() == [str(last.public_id)]


@pytest.mark.parametrize("limit", ["messages", "bytes"])
def test_a_batch_is_bounded_by_messages_and_by_the_content_it_holds(
    peer: Peer, box: Mailbox, monkeypatch, limit: str
) -> None:
    from mailboxes.transport import relay

    messages = [_send(box, [Recipient(REMOTE, notify="NEVER")]) for _ in range(4)]
    if limit == "messages":
        monkeypatch.setattr(relay, "BATCH_MESSAGES", 3)  # the task's own message and 2 others
    else:  # the task's own message whatever its size, then others while their content fits
        monkeypatch.setattr(relay, "BATCH_BYTES", 2 * messages[0].size + 1)
    assert message_relay(public_id=str(messages[3].public_id), also_due=relay.BATCH_ROWS) == 3
    statuses = dict(OutboundDelivery.objects.values_list("message_id", "status"))
    assert statuses == {
        messages[0].pk: Status.RELAYED,
        messages[1].pk: Status.RELAYED,
        messages[2].pk: Status.QUEUED,  # left to its own task
        messages[3].pk: Status.RELAYED,
    }
    assert message_relay(public_id=str(messages[2].public_id), also_due=relay.BATCH_ROWS) == 1
    assert len(peer.received) == 4


def test_a_batch_out_of_time_starts_no_transaction_and_its_rows_go_back_due_now(
    peer: Peer, box: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's claim on its rows lasts RELAY_CLAIM_SECONDS, then the sweep takes them back:
    a batch never starts a transaction past half of it (a slow peer, a big batch), so no row
    is sent while another worker may take it. What is left is queued again, due at once, the
    attempt not counted; the next task sends it, once."""
    from mailboxes.transport import relay
    from mailboxes.transport.smtp import NOT_ATTEMPTED

    messages = [_send(box, [Recipient(REMOTE, notify="NEVER")]) for _ in range(3)]
    monkeypatch.setattr(relay, "_send_deadline", lambda: 0.0)  # already past
    assert message_relay(public_id=str(messages[0].public_id), also_due=relay.BATCH_ROWS) == 3
    assert peer.received == []
    rows = list(OutboundDelivery.objects.all())
    assert {(r.status, r.attempts, r.last_reply) for r in rows} == {
        (Status.QUEUED, 0, NOT_ATTEMPTED)
    }
    assert all(r.next_attempt_at <= timezone.now() for r in rows)
    assert all(r.claim_token is None for r in rows)

    monkeypatch.undo()
    assert message_relay(public_id=str(messages[0].public_id), also_due=relay.BATCH_ROWS) == 3
    assert len(peer.received) == 3
    assert set(OutboundDelivery.objects.values_list("status", flat=True)) == {Status.RELAYED}
