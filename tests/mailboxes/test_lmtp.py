"""Our LMTP client against the real Dovecot: one outcome per recipient (RFC 2033 §4.2), and
connection reuse that never delivers twice."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from django.db import OperationalError

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


# --- Issue 21: the gateway's duplicate check runs while Dovecot reads the envelope ------------


def _two_boxes() -> tuple[str, str]:
    structure = make_structure()
    one = make_mailbox(structure=structure, local_part="avant1", owner=make_professional())
    two = make_mailbox(
        structure=structure,
        local_part="avant2",
        owner=make_professional(national_id="899700200002"),
    )
    wait_provisioned(one.address, two.address)
    return one.address, two.address


def test_before_data_runs_once_before_the_message_and_leaves_out_who_has_it(dovecot, db) -> None:
    """What ``before_data`` names (they have the message already) gets no copy and no
    outcome; the others get theirs; the same connection then serves the next message."""
    one, two = _two_boxes()
    calls: list[int] = []

    def already(*, skip: set[str]):
        def hook() -> set[str]:
            # Called before any reply is read: nothing is in the Maildirs yet.
            calls.append(_count(dovecot.mail_root, one) + _count(dovecot.mail_root, two))
            return skip

        return hook

    outcomes = lmtp.deliver("a@autre.mssante.fr", [one, two], RAW, before_data=already(skip={one}))
    assert list(outcomes) == [two] and outcomes[two].delivered
    assert (_count(dovecot.mail_root, one), _count(dovecot.mail_root, two)) == (0, 1)
    assert lmtp.deliver("a@autre.mssante.fr", [one], RAW, before_data=already(skip={one})) == {}
    outcomes = lmtp.deliver("a@autre.mssante.fr", [one, two], RAW, before_data=already(skip=set()))
    assert outcomes[one].delivered and outcomes[two].delivered
    assert (_count(dovecot.mail_root, one), _count(dovecot.mail_root, two)) == (1, 2)
    assert calls == [0, 1, 1]


def test_a_failing_before_data_delivers_nothing_and_the_next_message_goes(dovecot, db) -> None:
    """The gateway's check could not be made (the database is down): the session is dropped
    before the message was sent, the error goes to the caller, the next delivery works."""
    one, two = _two_boxes()

    def database_down() -> set[str]:
        raise OperationalError("connection refused")

    with pytest.raises(OperationalError):
        lmtp.deliver("a@autre.mssante.fr", [one, two], RAW, before_data=database_down)
    assert _count(dovecot.mail_root, one) + _count(dovecot.mail_root, two) == 0
    outcomes = lmtp.deliver("a@autre.mssante.fr", [one], RAW, before_data=set)
    assert outcomes[one].delivered and _count(dovecot.mail_root, one) == 1


def test_a_routine_report_filed_aside_honours_before_data(dovecot, db) -> None:
    """A report filed in « Accusés » (bal#Accuses@...): ``before_data`` names the BAL itself."""
    one, two = _two_boxes()
    report = (
        b"From: a@autre.mssante.fr\r\nSubject: Lu\r\nMessage-ID: <r1@t>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n'
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nLu.\r\n--b\r\n"
        b"Content-Type: message/disposition-notification\r\n\r\n"
        b"Final-Recipient: rfc822;x@y.fr\r\nDisposition: manual-action/MDN-sent-manually; displayed"
        b"\r\n--b--\r\n"
    )
    assert lmtp.folder_for(report) == lmtp.REPORTS_FOLDER
    outcomes = lmtp.deliver("", [one, two], report, before_data=lambda: {one})
    assert list(outcomes) == [two] and outcomes[two].delivered


def test_plain_addresses_are_written_as_smtplib_writes_them() -> None:
    for address in ["bal1@x.fr", "a.b+c@d-e.f", '"a b"@x.fr', "bal#Accuses@x.fr", "é@x.fr", "x"]:
        assert lmtp._path(address) == smtplib.quoteaddr(address)
