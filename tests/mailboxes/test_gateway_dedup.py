"""A message the gateway already delivered is not delivered twice
(mailboxes/transport/gateway/dedup.py): the sending operator lost our 250 and sends it again;
Dovecot itself keeps every copy it is given (no Sieve duplicate test), so only our own records can
recognise the message. And a different message is never taken for a resend (issue 15): same Message-
ID (the header's, whole), envelope sender, text and peer, or it is delivered."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.pki import Issued
from mailboxes.models import GatewayAttempt, Mailbox
from mailboxes.transport.gateway.dedup import attempts_purge, delivery_start, resend_key
from tests.factories import make_message
from tests.mailboxes.conftest import inbox, mx_client

pytestmark = pytest.mark.django_db(transaction=True)
SENDER = "labo@operateur-test.mssante.fr"


def _send(
    mx: int, pki: dict[str, Issued], to: str, raw: bytes, *, sender: str = SENDER,
    identity: str = "peer",
) -> tuple[int, bytes]:  # fmt: skip
    with mx_client(mx, pki, identity) as smtp:
        assert smtp.mail(sender)[0] == 250
        assert smtp.rcpt(to)[0] == 250
        return smtp.data(raw)


def test_a_message_sent_again_after_a_lost_reply_is_kept_once(
    mx: int, pki: dict[str, Issued], box: Mailbox, dovecot
) -> None:
    raw = make_message(to=box.address, subject="Résultats")
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    assert len(inbox(box.address)) == 1
    with mx_client(mx, pki) as smtp:
        code, reply = smtp.mail(SENDER)[0], None
        assert code == 250
        assert smtp.rcpt(box.address)[0] == 250
        code, reply = smtp.data(raw)
    assert code == 250, reply  # the sender is told it is delivered: it stops retrying
    assert len(inbox(box.address)) == 1
    other = make_message(to=box.address, subject="Résultats")  # another Message-ID
    with mx_client(mx, pki) as smtp:
        smtp.sendmail(SENDER, [box.address], other)
    assert len(inbox(box.address)) == 2


def test_only_recipients_of_a_successful_transaction_of_the_same_key_count(
    box: Mailbox, dovecot
) -> None:
    from accounts.audit import audit_record

    text = make_message(to=box.address)
    mid = _message_id(text)
    key = resend_key(message_id=mid, sender=SENDER, peer="CN=mx", content=text)

    def start(recipients: list[str], key: str = key) -> set[str]:
        return delivery_start(
            key=key, message_id=mid, recipients=recipients, sender=SENDER, content=text
        )

    audit_record(action="gateway.received", target_type="message", target_id=mid,
                 success=False, details={"to": [box.address], "resend_key": key})  # fmt: skip
    assert start([box.address]) == set()
    audit_record(action="gateway.received", target_type="message", target_id=mid,
                 details={"to": [box.address], "resend_key": key})  # fmt: skip
    assert start([box.address.upper(), "x@y.fr"]) == {box.address}
    other = resend_key(message_id=mid, sender=SENDER, peer="CN=mx", content=text + b"P.S.\r\n")
    assert start([box.address], key=other) == set()
    assert resend_key(message_id="", sender=SENDER, peer="CN=mx", content=text) == ""
    assert start([box.address], key="") == set()


def _message_id(raw: bytes) -> str:
    return raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()


def _store_dies(monkeypatch: pytest.MonkeyPatch, *, after_storing: bool) -> None:
    """Dovecot breaks the LMTP session during DATA, having stored the message or not."""
    from mailboxes.store import lmtp

    real = lmtp.deliver

    def dies(mail_from: str, recipients: list[str], content: bytes, **kwargs: Any) -> dict:
        if after_storing:
            real(mail_from, recipients, content, **kwargs)
        elif kwargs.get("before_data"):
            kwargs["before_data"]()  # the attempt marker, as the real one writes it
        raise lmtp.StoreUnreachable("connection reset during DATA")

    monkeypatch.setattr(lmtp, "deliver", dies)


@pytest.mark.parametrize("message_id", ["", "<résultat-7@labo.fr>"])
def test_a_message_dovecot_stored_before_dying_is_not_stored_again(
    mx: int,
    pki: dict[str, Issued],
    box: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    message_id: str,
) -> None:
    """Dovecot stored it, then died before answering: we said 451, the sender retries. The
    INBOX is searched for its Message-ID, in UTF-8 too (RFC 6532)."""
    raw = make_message(to=box.address, subject="Stocké avant la panne")
    if message_id:
        raw = _with_message_id(raw, message_id)
    with monkeypatch.context() as patch:
        _store_dies(patch, after_storing=True)
        assert _send(mx, pki, box.address, raw)[0] == 451
    assert len(inbox(box.address)) == 1
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    assert len(inbox(box.address)) == 1


def test_each_delivery_is_marked_before_dovecot_sees_it(
    mx: int, pki: dict[str, Issued], box: Mailbox
) -> None:
    from accounts.models import AuditEvent

    raw = make_message(to=box.address, subject="Marqué")
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    [(message_id, recipients, key)] = GatewayAttempt.objects.values_list(
        "message_id", "recipients", "resend_key"
    )
    assert (message_id, recipients) == (_message_id(raw), [box.address])
    assert len(key) == 64  # the trace names the same transaction
    assert AuditEvent.objects.get(action="gateway.received").details["resend_key"] == key


def test_a_message_stored_before_the_gateway_died_is_not_stored_again(
    mx: int, pki: dict[str, Issued], box: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our gateway was killed after Dovecot stored the message and before the success trace
    committed: only its attempt marker is left (here the trace fails to commit, which leaves
    the same state)."""
    from django.db import OperationalError

    from mailboxes.transport.gateway import policy

    def trace_lost(**kwargs: object) -> None:
        raise OperationalError("server closed the connection")

    raw = make_message(to=box.address, subject="Remis avant la panne de la passerelle")
    with monkeypatch.context() as patch:
        patch.setattr(policy, "trace", trace_lost)
        assert _send(mx, pki, box.address, raw)[0] == 250
    assert len(inbox(box.address)) == 1
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}  # 250: the sender stops
    assert len(inbox(box.address)) == 1


def test_a_message_the_gateway_died_before_storing_is_delivered_on_retry(
    mx: int, pki: dict[str, Issued], box: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dovecot never had it: the marker alone must not stop the retry."""
    raw = make_message(to=box.address, subject="Jamais arrivé")
    with monkeypatch.context() as patch:
        _store_dies(patch, after_storing=False)
        assert _send(mx, pki, box.address, raw)[0] == 451
    assert inbox(box.address) == []
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    assert len(inbox(box.address)) == 1


def test_old_markers_are_purged(box: Mailbox) -> None:
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(days=8)
    GatewayAttempt.objects.create(message_id="<old@x>", recipients=[], started_at=old)
    GatewayAttempt.objects.create(message_id="<new@x>", recipients=[], started_at=timezone.now())
    assert attempts_purge(batch=1) == 1
    assert list(GatewayAttempt.objects.values_list("message_id", flat=True)) == ["<new@x>"]


def test_a_database_failure_before_delivery_is_a_temporary_refusal(
    mx: int, pki: dict[str, Issued], box: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No duplicate check possible: 451, the sender keeps the message; nothing delivered."""
    import smtplib

    from django.db import OperationalError

    from mailboxes.transport.gateway import policy

    def database_down(**kwargs: object) -> set[str]:
        raise OperationalError("connection refused")

    monkeypatch.setattr(policy, "delivery_start", database_down)
    with mx_client(mx, pki) as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.sendmail(SENDER, [box.address], make_message(to=box.address))
    assert refused.value.smtp_code == 451
    assert inbox(box.address) == []


def test_a_trace_failure_after_delivery_still_answers_250(
    mx: int, pki: dict[str, Issued], box: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivered is delivered: a 5xx now would make the sender bounce a message the BAL has."""
    from django.db import OperationalError

    from mailboxes.transport.gateway import policy

    def trace_fails(**kwargs: object) -> None:
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(policy, "trace", trace_fails)
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], make_message(to=box.address)) == {}
    assert len(inbox(box.address)) == 1


# --- Issue 15: a 250 is a promise, a different message is never taken for a resend -------------


def _with_message_id(raw: bytes, message_id: str) -> bytes:
    return raw.replace(
        f"Message-ID: {_message_id(raw)}".encode(), f"Message-ID: {message_id}".encode()
    )


def _forwarding(original: bytes, to: str, how: str) -> bytes:
    """A message without a Message-ID field of its own that carries ``original`` (and so its
    Message-ID line) in its body: quoted in the text, or forwarded as a message/rfc822 part."""
    head = (
        f"From: Labo <{SENDER}>\r\nTo: {to}\r\nSubject: Tr: Résultats\r\n"
        "Date: Tue, 17 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    ).encode()
    if how == "quoted":
        return (
            head + b"Content-Type: text/plain; charset=utf-8\r\n\r\nVoir ci-dessous.\r\n\r\n"
            b"----- Message d'origine -----\r\n" + original
        )
    return (
        head + b'Content-Type: multipart/mixed; boundary="sep"\r\n\r\n--sep\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nMessage transmis.\r\n--sep\r\n"
        b"Content-Type: message/rfc822\r\n\r\n" + original + b"\r\n--sep--\r\n"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: a\r\nMessage-ID: <1@x.fr>\r\n\r\nMessage-ID: <2@x.fr>\r\n", "<1@x.fr>"),
        (b"Subject: a\r\n\r\nMessage-ID: <2@x.fr>\r\n", ""),  # in the body only
        (b"Subject: a\nmessage-id:\n <folded@x.fr>\nTo: b\n\nbody\n", "<folded@x.fr>"),
        (b"X-Original-Message-ID: <3@x.fr>\r\nSubject: a\r\n", ""),  # another field
        (b"\r\nMessage-ID: <4@x.fr>\r\n", ""),  # no header section at all
        (b"Message-ID: <" + b"x" * 300 + b"@x.fr>\r\n", "<" + "x" * 300 + "@x.fr>"),
    ],
)
def test_the_message_id_is_the_header_s_own_and_whole(raw: bytes, expected: str) -> None:
    from mailboxes.store.headers import message_id_of

    assert message_id_of(raw) == expected


@pytest.mark.parametrize("how", ["quoted", "forwarded"])
def test_a_message_without_message_id_carrying_another_in_its_body_is_delivered(
    mx: int, pki: dict[str, Issued], box: Mailbox, how: str
) -> None:
    original = make_message(to=box.address, subject="Résultats", body="Original.")
    assert _send(mx, pki, box.address, original)[0] == 250
    carrier = _forwarding(original, box.address, how)
    assert _send(mx, pki, box.address, carrier)[0] == 250
    stored = inbox(box.address)
    assert len(stored) == 2
    assert any(b"Subject: Tr: R" in message for message in stored)


def test_two_message_ids_sharing_their_first_128_characters_are_two_messages(
    mx: int, pki: dict[str, Issued], box: Mailbox
) -> None:
    prefix = "<" + "compte-rendu-de-sortie." * 7  # 162 characters in common
    first = _with_message_id(make_message(to=box.address, body="Un."), f"{prefix}1@labo.fr>")
    second = _with_message_id(make_message(to=box.address, body="Deux."), f"{prefix}2@labo.fr>")
    assert _send(mx, pki, box.address, first)[0] == 250
    assert _send(mx, pki, box.address, second)[0] == 250
    assert len(inbox(box.address)) == 2
    assert _send(mx, pki, box.address, second)[0] == 250  # a true resend of a long id
    assert len(inbox(box.address)) == 2


@pytest.mark.parametrize("differs", ["content", "sender", "peer"])
def test_a_message_reusing_the_message_id_of_another_is_delivered(
    mx: int, pki: dict[str, Issued], box: Mailbox, differs: str
) -> None:
    """Same Message-ID, and another text, envelope sender or sending operator: not a resend."""
    from annuaire.models import WhitelistEntry, WhitelistVersion
    from annuaire.whitelist import dn_key

    first = make_message(to=box.address, subject="Résultats", body="Premier envoi.")
    second, sender, identity = first, SENDER, "peer"
    if differs == "content":
        second = first.replace(b"Premier envoi.", b"Autre message, meme identifiant.")
    elif differs == "sender":
        sender = "secretariat@operateur-test.mssante.fr"
    else:  # the domain's second listed MTA, with its own certificate
        WhitelistEntry.objects.create(
            version=WhitelistVersion.objects.get(is_current=True),
            domain="operateur-test.mssante.fr",
            dn=pki["gateway"].subject,
            dn_key=dn_key(pki["gateway"].subject),
        )
        identity = "gateway"
    assert _send(mx, pki, box.address, first)[0] == 250
    assert _send(mx, pki, box.address, second, sender=sender, identity=identity)[0] == 250
    assert len(inbox(box.address)) == 2


@pytest.mark.parametrize("stored_before_dying", [False, True])
def test_an_interrupted_attempt_is_not_taken_for_another_message_with_its_message_id(
    mx: int,
    pki: dict[str, Issued],
    box: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
    stored_before_dying: bool,
) -> None:
    """The INBOX already holds a message with this Message-ID when an attempt of another one
    is cut short (Dovecot died before answering, having stored it or not): on the retry, the
    INBOX search must find this message, not its namesake."""
    earlier = make_message(to=box.address, subject="Résultats", body="Premier message.")
    later = earlier.replace(b"Premier message.", b"Second message, meme identifiant.")
    assert _send(mx, pki, box.address, earlier)[0] == 250
    with monkeypatch.context() as patch:
        _store_dies(patch, after_storing=stored_before_dying)
        assert _send(mx, pki, box.address, later)[0] == 451
    assert _send(mx, pki, box.address, later)[0] == 250
    stored = inbox(box.address)
    assert len(stored) == 2
    assert sum(b"Second message" in message for message in stored) == 1
