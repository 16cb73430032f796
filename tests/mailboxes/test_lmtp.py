"""Our LMTP client against the real Dovecot: one outcome per recipient (RFC 2033 §4.2), and
connection reuse that never delivers twice."""

from __future__ import annotations

from pathlib import Path

from mailboxes.store import lmtp
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned

RAW = b"From: a@autre.mssante.fr\r\nSubject: essai\r\nMessage-ID: <l1@t>\r\n\r\nCorps\r\n"


def _count(mail_root: Path, address: str) -> int:
    local, _, domain = address.partition("@")
    return len(list(mail_root.glob(f"{domain}/{local}/Maildir/new/*")))


def test_each_recipient_gets_its_own_outcome(dovecot, db) -> None:
    structure = make_structure()
    box1 = make_mailbox(structure=structure, local_part="un", owner=make_professional())
    box2 = make_mailbox(
        structure=structure, local_part="deux", owner=make_professional(national_id="899700200002")
    )
    wait_provisioned(box1.address, box2.address)
    unknown = "inconnu@" + box1.address.partition("@")[2]
    outcomes = lmtp.deliver("a@autre.mssante.fr", [box1.address, unknown, box2.address], RAW)
    assert outcomes[box1.address].delivered and outcomes[box2.address].delivered
    assert outcomes[unknown].permanent
    assert _count(dovecot.mail_root, box1.address) == 1
    assert _count(dovecot.mail_root, box2.address) == 1


def test_a_reused_connection_delivers_each_message_once(dovecot, db) -> None:
    box = make_mailbox(structure=make_structure(), local_part="reutil", owner=make_professional())
    wait_provisioned(box.address)
    for n in range(5):
        outcomes = lmtp.deliver("a@autre.mssante.fr", [box.address], RAW.replace(b"l1", b"l%d" % n))
        assert outcomes[box.address].delivered
    assert _count(dovecot.mail_root, box.address) == 5
