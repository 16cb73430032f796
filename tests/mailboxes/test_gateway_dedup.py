"""A message the gateway already delivered is not delivered twice (mailboxes/gateway/dedup.py):
the sending operator lost our 250 and sends it again, and meanwhile Dovecot lost its own
duplicate database (killed): our success trace still recognises the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.pki import Issued
from mailboxes.gateway.dedup import delivered_before
from mailboxes.models import Mailbox
from tests.factories import make_message
from tests.mailboxes.conftest import inbox, mx_client

pytestmark = pytest.mark.django_db(transaction=True)
SENDER = "labo@operateur-test.mssante.fr"


def _forget_dovecot_duplicates(mail_root: Path, address: str) -> None:
    local, _, domain = address.partition("@")
    (mail_root / domain / local / ".dovecot.lda-dupes").unlink()


def test_a_message_sent_again_after_a_lost_reply_is_kept_once(
    mx: int, pki: dict[str, Issued], box: Mailbox, dovecot
) -> None:
    raw = make_message(to=box.address, subject="Résultats")
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    assert len(inbox(box.address)) == 1
    _forget_dovecot_duplicates(dovecot.mail_root, box.address)
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


def test_only_recipients_of_a_successful_transaction_count(box: Mailbox) -> None:
    from accounts.audit import audit_record

    audit_record(action="gateway.received", target_type="message", target_id="<a@b>",
                 success=False, details={"to": [box.address]})  # fmt: skip
    assert delivered_before("<a@b>", [box.address]) == set()
    audit_record(action="gateway.received", target_type="message", target_id="<a@b>",
                 details={"to": [box.address]})  # fmt: skip
    assert delivered_before("<a@b>", [box.address.upper(), "x@y.fr"]) == {box.address}
    assert delivered_before("", [box.address]) == set()


def test_a_message_dovecot_stored_before_dying_is_not_stored_again(
    mx: int, pki: dict[str, Issued], box: Mailbox, dovecot
) -> None:
    """Dovecot stored it, then died before answering: we said 451, the sender retries."""
    from accounts.audit import audit_record
    from tests.mailboxes.conftest import deliver

    raw = make_message(to=box.address, subject="Stocké avant la panne")
    message_id = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    deliver(box.address, raw, sender=SENDER)  # what Dovecot stored before dying
    _forget_dovecot_duplicates(dovecot.mail_root, box.address)
    audit_record(
        action="gateway.received", target_type="message", target_id=message_id, success=False,
        error_code="451", details={"to": [box.address],
                                   "reply": "451 4.3.0 Mail store unavailable, try again later"},
    )  # fmt: skip
    with mx_client(mx, pki) as smtp:
        assert smtp.sendmail(SENDER, [box.address], raw) == {}
    assert len(inbox(box.address)) == 1
