"""API LPS submission (port 587): STARTTLS, then XOAUTH2/OAUTHBEARER with a PSC token, the
sender the BAL the token opened, recipients judged at RCPT as the webmail judges them, the
message into the same outbound spool and Sent folder. Clients: smtplib and curl."""

from __future__ import annotations

import base64
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import pytest
from django.conf import settings as django_settings
from imapclient import IMAPClient

from accounts.audit import Action
from accounts.models import AuditEvent
from devtools.psc_mock import tokens
from mailboxes.models import OutboundMessage
from tests.factories import grant, make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned
from tests.mailboxes.software.conftest import (
    DISCOVERY_PATH,
    client_tls,
    submission_server,
    token,
)

pytestmark = pytest.mark.django_db(transaction=True)

DOCTOR = "899700120019"
SECRETARY = "899700120035"
NURSE = "899700120027"
OUTSIDE = "quelquun@gmail.com"


@pytest.fixture
def submission(pki, dovecot, live_server, settings) -> Iterator[int]:
    """Our submission server; PSC is the mock on the live server. Yields the port."""
    settings.PSC_DISCOVERY_URL = f"{live_server.url}{DISCOVERY_PATH}"
    with submission_server(pki, settings) as port:
        yield port


@pytest.fixture
def cast(dovecot) -> dict[str, Any]:
    structure = make_structure()
    doctor = make_professional(national_id=DOCTOR)
    secretary = make_professional(national_id=SECRETARY, first_name="Sophie", last_name="Bernard")
    nurse = make_professional(national_id=NURSE, first_name="Julie", last_name="Petit")
    box = make_mailbox(structure=structure, owner=doctor)
    colleague = make_mailbox(
        structure=structure, local_part="soins", kind="ORG", responsible=doctor
    )
    grant(box, secretary, can_send=True)
    grant(box, nurse)  # reading only
    wait_provisioned(box.address, colleague.address)
    return {"box": box, "colleague": colleague, "doctor": doctor, "secretary": secretary}


def _session(port: int, pki: Any) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=20)
    smtp.ehlo("dui.ehpad.local")
    smtp.starttls(context=client_tls(pki))
    smtp.ehlo("dui.ehpad.local")
    return smtp


def _xoauth2(address: str, bearer: str) -> str:
    return f"user={address}\x01auth=Bearer {bearer}\x01\x01"


def _message(sender: str, to: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nBcc: cache@ailleurs.fr\r\nSubject: Transmission DUI\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour\r\n"
    ).encode()


def _sent_folder(address: str) -> list[bytes]:
    with IMAPClient("127.0.0.1", port=django_settings.DOVECOT_IMAP_PORT, ssl=False) as imap:
        imap.login(
            f"{address}*{django_settings.DOVECOT_MASTER_USER}",
            django_settings.DOVECOT_MASTER_PASSWORD,
        )
        imap.select_folder("Sent", readonly=True)
        uids = imap.search(["ALL"])
        return [d[b"BODY[]"] for d in imap.fetch(uids, ["BODY.PEEK[]"]).values()] if uids else []


def test_holder_submits_with_xoauth2_into_the_outbound_spool(submission, cast, pki) -> None:
    box, colleague = cast["box"], cast["colleague"]
    smtp = _session(submission, pki)
    smtp.auth("XOAUTH2", lambda _=None: _xoauth2(box.address, token(DOCTOR)))
    refused = smtp.sendmail(box.address, [colleague.address], _message(box.address, "x"))
    smtp.quit()

    assert refused == {}
    spooled = OutboundMessage.objects.get(origin=OutboundMessage.Origin.SOFTWARE)
    assert spooled.mailbox == box and spooled.author == cast["doctor"]
    sent = message_from_bytes(bytes(spooled.content), policy=policy.default)
    assert sent["X-MSS-NIL"] and sent["Bcc"] is None and sent["Sender"] is None
    assert sent["From"].addresses[0].addr_spec == box.address
    assert [m for m in _sent_folder(box.address) if b"Transmission DUI" in m]
    traces = set(AuditEvent.objects.values_list("action", flat=True))
    assert {Action.SOFTWARE_LOGIN, Action.MESSAGE_SENT} <= traces
    sent_trace = AuditEvent.objects.get(action=Action.MESSAGE_SENT)
    assert sent_trace.details["software"] == "logiciel-metier-test"


def test_several_messages_of_one_session_each_get_their_sent_copy(submission, cast, pki) -> None:
    """The session keeps one IMAP session for its Sent copies: every message is still filed,
    before and after a refused one."""
    box, colleague = cast["box"], cast["colleague"]
    smtp = _session(submission, pki)
    smtp.auth("XOAUTH2", lambda _=None: _xoauth2(box.address, token(DOCTOR)))
    for n in range(3):
        body = _message(box.address, "x").replace(b"Transmission DUI", f"Envoi {n}".encode())
        assert smtp.sendmail(box.address, [colleague.address], body) == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp.sendmail(box.address, [OUTSIDE], _message(box.address, OUTSIDE))
    body = _message(box.address, "x").replace(b"Transmission DUI", b"Envoi 3")
    assert smtp.sendmail(box.address, [colleague.address], body) == {}
    smtp.quit()

    filed = _sent_folder(box.address)
    assert sorted(n for n in range(4) if any(f"Envoi {n}".encode() in m for m in filed)) == [
        0, 1, 2, 3,
    ]  # fmt: skip
    assert OutboundMessage.objects.filter(mailbox=box).count() == 4


def test_delegate_submits_with_oauthbearer_and_sender_names_them(submission, cast, pki) -> None:
    box = cast["box"]
    smtp = _session(submission, pki)
    response = f"n,a={box.address},\x01auth=Bearer {token(SECRETARY)}\x01\x01"
    code, _ = smtp.docmd("AUTH", "OAUTHBEARER " + base64.b64encode(response.encode()).decode())
    assert code == 235
    smtp.sendmail(box.address, [cast["colleague"].address], _message(box.address, "x"))
    smtp.quit()
    sent = message_from_bytes(
        bytes(OutboundMessage.objects.get(origin=OutboundMessage.Origin.SOFTWARE).content),
        policy=policy.default,
    )
    assert "Sophie" in str(sent["Sender"])


def test_recipient_outside_the_trust_space_is_refused_at_rcpt(submission, cast, pki) -> None:
    box = cast["box"]
    smtp = _session(submission, pki)
    smtp.auth("XOAUTH2", lambda _=None: _xoauth2(box.address, token(DOCTOR)))
    smtp.mail(box.address)
    code, reply = smtp.rcpt(OUTSIDE)
    smtp.quit()
    assert code == 550 and b"5.7.1" in reply and OUTSIDE.encode() in reply
    assert not OutboundMessage.objects.filter(origin=OutboundMessage.Origin.SOFTWARE).exists()


def test_read_only_delegate_may_not_send(submission, cast, pki) -> None:
    box = cast["box"]
    smtp = _session(submission, pki)
    smtp.auth("XOAUTH2", lambda _=None: _xoauth2(box.address, token(NURSE)))
    code, reply = smtp.mail(box.address)
    smtp.quit()
    assert code == 550 and b"droit d'envoi" in reply


def test_sender_must_be_the_opened_bal(submission, cast, pki) -> None:
    smtp = _session(submission, pki)
    smtp.auth("XOAUTH2", lambda _=None: _xoauth2(cast["box"].address, token(DOCTOR)))
    code, _ = smtp.mail(cast["colleague"].address)
    smtp.quit()
    assert code == 553


@pytest.mark.parametrize("who", ["outsider", "expired"])
def test_a_token_that_does_not_open_the_bal_is_refused(submission, cast, pki, who) -> None:
    outsider = str(make_professional().national_id)
    bearer = token(outsider) if who == "outsider" else token(DOCTOR, lifetime=-1)
    smtp = _session(submission, pki)
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp.auth("XOAUTH2", lambda _=None: _xoauth2(cast["box"].address, bearer))
    smtp.quit()
    assert refused.value.smtp_code == 535
    assert AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN_FAILED).count() == 1


def test_nothing_before_tls(submission, cast) -> None:
    smtp = smtplib.SMTP("127.0.0.1", submission, timeout=20)
    smtp.ehlo("dui.ehpad.local")
    assert "auth" not in smtp.esmtp_features
    response = base64.b64encode(_xoauth2(cast["box"].address, token(DOCTOR)).encode()).decode()
    code, _ = smtp.docmd("AUTH", "XOAUTH2 " + response)
    assert code == 530
    code, _ = smtp.docmd("MAIL", f"FROM:<{cast['box'].address}>")
    assert code == 530
    smtp.quit()
    assert not AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).exists()


def test_password_mechanisms_are_not_offered(submission, pki) -> None:
    smtp = _session(submission, pki)
    mechanisms = smtp.esmtp_features["auth"].split()
    smtp.quit()
    assert sorted(mechanisms) == ["EXTERNAL", "OAUTHBEARER", "XOAUTH2"]  # no PLAIN, no LOGIN


def test_curl_submits_with_its_oauth2_bearer(submission, cast, pki, tmp_path) -> None:
    box, colleague = cast["box"], cast["colleague"]
    upload = tmp_path / "message.eml"
    upload.write_bytes(_message(box.address, colleague.address))
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--cacert",
            str(pki["ca"].cert),
            f"smtp://127.0.0.1:{submission}",
            "--mail-from",
            box.address,
            "--mail-rcpt",
            colleague.address,
            "--upload-file",
            str(upload),
            "--user",
            f"{box.address}:",
            "--oauth2-bearer",
            token(DOCTOR),
            "--max-time",
            "30",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert OutboundMessage.objects.filter(origin=OutboundMessage.Origin.SOFTWARE).count() == 1


def test_a_delegation_revoked_during_the_session_stops_the_next_message(
    submission, cast, pki
) -> None:
    from mailboxes.console.services.people import access_revoke
    from mailboxes.models import MailboxAccess

    box = cast["box"]
    smtp = _session(submission, pki)
    smtp.auth("XOAUTH2", lambda _=None: _xoauth2(box.address, token(SECRETARY)))
    access = MailboxAccess.objects.get(mailbox=box, user=cast["secretary"])
    access_revoke(access=access, actor=cast["doctor"])
    smtp.mail(box.address)
    smtp.rcpt(cast["colleague"].address)
    code, _ = smtp.data(_message(box.address, cast["colleague"].address))
    smtp.quit()
    assert code == 550
    assert not OutboundMessage.objects.filter(origin=OutboundMessage.Origin.SOFTWARE).exists()


def test_an_expired_token_ends_the_submission_session(submission, cast, pki, monkeypatch) -> None:
    """SC.MSS/CONF.10: past the token's expiry, the session takes no more messages. The
    clock of the server (same process) is moved past it rather than waited for."""
    from mailboxes.software import submission as server

    box = cast["box"]
    smtp = _session(submission, pki)
    smtp.auth("XOAUTH2", lambda _=None: _xoauth2(box.address, token(DOCTOR)))
    later = time.time() + tokens.TOKEN_TTL + 1
    monkeypatch.setattr(server, "now", lambda: later)
    code, _ = smtp.mail(box.address)
    smtp.quit()
    assert code == 421
