"""A message the gateway already delivered is not delivered twice
(mailboxes/transport/gateway/dedup.py): the sending operator lost our 250 and sends it again;
Dovecot itself keeps every copy it is given (no Sieve duplicate test), so only our own records can
recognise the message."""

from __future__ import annotations

import pytest

from devtools.pki import Issued
from mailboxes.models import GatewayAttempt, Mailbox
from mailboxes.transport.gateway.dedup import attempts_purge, delivery_start
from tests.factories import make_message
from tests.mailboxes.conftest import inbox, mx_client

pytestmark = pytest.mark.django_db(transaction=True)
SENDER = "labo@operateur-test.mssante.fr"


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


def test_only_recipients_of_a_successful_transaction_count(box: Mailbox, dovecot) -> None:
    from accounts.audit import audit_record

    audit_record(action="gateway.received", target_type="message", target_id="<a@b>",
                 success=False, details={"to": [box.address]})  # fmt: skip
    assert delivery_start("<a@b>", [box.address]) == set()
    audit_record(action="gateway.received", target_type="message", target_id="<a@b>",
                 details={"to": [box.address]})  # fmt: skip
    assert delivery_start("<a@b>", [box.address.upper(), "x@y.fr"]) == {box.address}
    assert delivery_start("", [box.address]) == set()


def test_a_message_dovecot_stored_before_dying_is_not_stored_again(
    mx: int, pki: dict[str, Issued], box: Mailbox, dovecot
) -> None:
    """Dovecot stored it, then died before answering: we said 451, the sender retries."""
    from accounts.audit import audit_record
    from tests.mailboxes.conftest import deliver

    raw = make_message(to=box.address, subject="Stocké avant la panne")
    message_id = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    deliver(box.address, raw, sender=SENDER)  # what Dovecot stored before dying
    audit_record(
        action="gateway.received", target_type="message", target_id=message_id, success=False,
        error_code="451", details={"to": [box.address],
                                   "reply": "451 4.3.0 Mail store unavailable, try again later"},
    )  # fmt: skip
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    assert len(inbox(box.address)) == 1


def _message_id(raw: bytes) -> str:
    return raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()


def test_each_delivery_is_marked_before_dovecot_sees_it(
    mx: int, pki: dict[str, Issued], box: Mailbox
) -> None:
    raw = make_message(to=box.address, subject="Marqué")
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    marks = list(GatewayAttempt.objects.values_list("message_id", "recipients"))
    assert marks == [(_message_id(raw), [box.address])]


def test_a_message_stored_before_the_gateway_died_is_not_stored_again(
    mx: int, pki: dict[str, Issued], box: Mailbox, dovecot
) -> None:
    """Our gateway was killed after Dovecot stored the message and before the success trace
    committed: only its attempt marker is left."""
    from django.utils import timezone

    from tests.mailboxes.conftest import deliver

    raw = make_message(to=box.address, subject="Remis avant la panne de la passerelle")
    deliver(box.address, raw, sender=SENDER)  # what Dovecot stored
    GatewayAttempt.objects.create(
        message_id=_message_id(raw), recipients=[box.address], started_at=timezone.now()
    )
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}  # 250: the sender stops
    assert len(inbox(box.address)) == 1


def test_a_message_the_gateway_died_before_storing_is_delivered_on_retry(
    mx: int, pki: dict[str, Issued], box: Mailbox, dovecot
) -> None:
    """Killed before Dovecot had it: the marker alone must not stop the retry."""
    from django.utils import timezone

    raw = make_message(to=box.address, subject="Jamais arrivé")
    GatewayAttempt.objects.create(
        message_id=_message_id(raw), recipients=[box.address], started_at=timezone.now()
    )
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

    def database_down(message_id: str, recipients: list[str]) -> set[str]:
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
