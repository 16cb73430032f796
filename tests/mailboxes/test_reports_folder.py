"""Routine reports are filed in « Accusés » at delivery (store.lmtp.folder_for): a read
receipt or a DSN of success updates the Sent list and is kept out of the INBOX; a failure or a
delay stays in the INBOX, where someone acts on it. No address may name a folder itself."""

from __future__ import annotations

import pytest

from mailboxes.store import lmtp
from mailboxes.store.imap import MailStore
from mailboxes.transport.gateway.policy import check_recipient
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned

pytestmark = pytest.mark.django_db


def _dsn(*actions: str) -> bytes:
    blocks = "".join(
        f"Final-Recipient: rfc822; r{i}@ch-exemple.mssante.fr\r\nAction: {action}\r\n"
        f"Status: {'2.0.0' if action == 'delivered' else '5.1.1'}\r\n\r\n"
        for i, action in enumerate(actions)
    )
    return (
        "From: MAILER-DAEMON@ch-exemple.mssante.fr\r\n"
        "To: claire.martin@ehpad-les-tilleuls.mssante.fr\r\n"
        "Subject: Rapport de remise\r\n"
        "Message-ID: <dsn-1@ch-exemple.mssante.fr>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nRapport.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.ch-exemple.mssante.fr\r\n\r\n"
        f"{blocks}"
        "--b--\r\n"
    ).encode()


MDN = (
    b"From: paul.roux@ch-exemple.mssante.fr\r\n"
    b"To: claire.martin@ehpad-les-tilleuls.mssante.fr\r\n"
    b"Subject: Accuse de lecture\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=disposition-notification; boundary="m"\r\n\r\n'
    b"--m\r\nContent-Type: text/plain\r\n\r\nLu.\r\n"
    b"--m\r\nContent-Type: message/disposition-notification\r\n\r\n"
    b"Final-Recipient: rfc822; paul.roux@ch-exemple.mssante.fr\r\n"
    b"Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n"
    b"--m--\r\n"
)
PLAIN = b"From: a@b.mssante.fr\r\nSubject: multipart/report dans le texte\r\n\r\nBonjour\r\n"


@pytest.mark.parametrize(
    ("content", "folder"),
    [
        (MDN, "Accuses"),
        (_dsn("delivered"), "Accuses"),
        (_dsn("relayed", "delivered"), "Accuses"),
        (_dsn("failed"), "INBOX"),
        (_dsn("delivered", "failed"), "INBOX"),
        (_dsn("delayed"), "INBOX"),
        (PLAIN, "INBOX"),
    ],
    ids=["mdn", "dsn-delivered", "dsn-relayed", "dsn-failed", "dsn-mixed", "dsn-delayed", "plain"],
)
def test_each_kind_of_message_is_filed_where_someone_expects_it(
    dovecot, content: bytes, folder: str
) -> None:
    box = make_mailbox(
        structure=make_structure(), owner=make_professional(), local_part="claire.martin"
    )
    wait_provisioned(box.address)

    outcomes = lmtp.deliver("", [box.address], content)

    assert outcomes[box.address].delivered  # keyed by the address given, not the filed one
    with MailStore(box.address) as store:
        counts = {name: store.page(name).total for name in ("INBOX", "Accuses")}
    assert counts == {"INBOX": int(folder == "INBOX"), "Accuses": int(folder == "Accuses")}


@pytest.mark.parametrize("detail", ["Accuses", "INBOX", "Trash", "Nouveau", ""])
def test_no_address_from_outside_names_a_folder(dovecot, detail: str) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    local, _at, domain = box.address.partition("@")

    assert check_recipient(f"{local}#{detail}@{domain}") == "550 5.1.1 No such mailbox here"
