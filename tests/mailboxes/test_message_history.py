"""« Who read, moved, deleted this message » on an ORG BAL, through the real webmail services
and a real Dovecot (accounts.journal.message_history)."""

from __future__ import annotations

import email
from dataclasses import dataclass

import pytest
from django.conf import settings
from imapclient import IMAPClient

from accounts.journal import message_history
from accounts.models import AuditEvent, User
from mailboxes.access import access_mailbox
from mailboxes.models import Mailbox
from mailboxes.webmail.services.messages import (
    attachment_open,
    folder_open,
    message_open,
    messages_delete,
    messages_flag,
    messages_move,
)
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db


@dataclass
class Team:
    nurse: User  # member A
    doctor: User  # member B
    org: Mailbox
    per: Mailbox


@pytest.fixture
def team(dovecot) -> Team:
    ehpad = make_structure()
    nurse = make_professional(first_name="Julien", last_name="Bernard", profession="60")
    doctor = make_professional(first_name="Claire", last_name="Martin")
    org = make_mailbox(
        structure=ehpad, kind="ORG", local_part="soins", responsible=doctor, display_name="Soins"
    )
    per = make_mailbox(structure=ehpad, local_part="claire.martin", owner=doctor)
    grant(org, nurse, can_organise=True, can_send=True)
    grant(org, doctor, can_organise=True, can_send=True)
    wait_provisioned(org.address, per.address)
    return Team(nurse, doctor, org, per)


def _deliver(address: str, raw: bytes) -> str:
    deliver(address, raw)
    return str(email.message_from_bytes(raw)["Message-ID"])


def _create_folder(address: str, name: str) -> None:
    with IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap:
        imap.login(f"{address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD)
        imap.create_folder(name)


def _story(events: list[AuditEvent]) -> list[tuple[str, User | None]]:
    return [(e.action, e.actor) for e in events]


def test_history_names_who_read_moved_and_deleted_the_message(team: Team) -> None:
    first = _deliver(team.org.address, make_message(to=team.org.address, subject="Relève"))
    second = _deliver(team.org.address, make_message(to=team.org.address, subject="Planning"))
    _create_folder(team.org.address, "Archives")
    as_nurse = access_mailbox(team.nurse, team.org.public_id)
    as_doctor = access_mailbox(team.doctor, team.org.public_id)

    message_open(grant=as_nurse, actor=team.nurse, folder="INBOX", uid=1)
    message_open(grant=as_nurse, actor=team.nurse, folder="INBOX", uid=2)
    messages_flag(grant=as_doctor, actor=team.doctor, folder="INBOX", uids=[1, 2, 99],
                  flag="flagged", on=True)  # fmt: skip
    messages_move(grant=as_doctor, actor=team.doctor, folder="INBOX", uids=[1], target="Archives")
    messages_delete(grant=as_doctor, actor=team.doctor, folder="Archives", uids=[1])

    history = message_history(mailbox_id=str(team.org.public_id), message_id=first)

    assert _story(history) == [
        ("message.read", team.nurse),
        ("message.flag", team.doctor),
        ("message.move", team.doctor),
        ("message.delete", team.doctor),
    ]
    assert history[2].details["target"] == "Archives"
    assert history[3].details["folder"] == "Archives"
    assert _story(message_history(mailbox_id=str(team.org.public_id), message_id=second)) == [
        ("message.read", team.nurse),
        ("message.flag", team.doctor),
    ]


def test_action_traces_name_the_messages_before_they_move_and_carry_no_content(
    team: Team,
) -> None:
    first = _deliver(team.org.address, make_message(to=team.org.address, subject="Résultats"))
    second = _deliver(team.org.address, make_message(to=team.org.address, subject="Bilan"))
    as_doctor = access_mailbox(team.doctor, team.org.public_id)

    messages_delete(grant=as_doctor, actor=team.doctor, folder="INBOX", uids=[2, 1, 7])

    trace = AuditEvent.objects.get(action="message.delete")
    assert trace.details["message_ids"] == [first, second]
    assert trace.details["uids"] == [2, 1, 7]
    assert "Résultats" not in str(trace.details) and "Bilan" not in str(trace.details)
    _folders, trash = folder_open(grant=as_doctor, actor=team.doctor, folder="Trash")
    assert [m.seen for m in trash.messages] == [False, False]  # reading the ids marked nothing


def test_history_is_per_bal_and_includes_attachment_downloads(team: Team) -> None:
    raw = make_message(
        to=team.org.address,
        extra_headers='Content-Disposition: attachment; filename="cr.txt"\r\n',
    )
    mid = _deliver(team.org.address, raw)
    deliver(team.per.address, raw)  # the same message, also in the doctor's own BAL
    as_nurse = access_mailbox(team.nurse, team.org.public_id)
    own = access_mailbox(team.doctor, team.per.public_id)

    attachment_open(grant=as_nurse, actor=team.nurse, folder="INBOX", uid=1, index=0)
    message_open(grant=own, actor=team.doctor, folder="INBOX", uid=1)

    on_org = message_history(mailbox_id=str(team.org.public_id), message_id=mid)
    on_per = message_history(mailbox_id=str(team.per.public_id), message_id=mid)

    assert _story(on_org) == [("message.attachment_download", team.nurse)]
    assert _story(on_per) == [("message.read", team.doctor)]
