"""BAL lifecycle services and what Dovecot serves as a result (real Dovecot)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import TestCase, override_settings
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from accounts.models import AuditEvent
from mailboxes.console.services.closing import mailbox_close
from mailboxes.console.services.lifecycle import (
    mailbox_create,
    mailbox_reactivate,
    mailbox_suspend,
)
from mailboxes.console.services.recovery_key import recovery_key_set
from mailboxes.models import Mailbox
from tests.factories import make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db


def _served(dovecot) -> set[str]:
    return {line.split(":", 1)[0] for line in dovecot.users_path.read_text().splitlines() if line}


def test_create_provisions_dovecot_and_traces(dovecot) -> None:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)

    assert _served(dovecot) == {box.address}
    wait_provisioned(box.address)
    deliver(box.address, make_message(subject="Bienvenue"))
    event = AuditEvent.objects.get(action="mailbox.created")
    assert event.target_id == str(box.public_id) and event.details == {
        "address": box.address,
        "kind": "PER",
    }


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"kind": "PER", "local_part": "claire.martin"}, "owner"),
        ({"kind": "ORG", "local_part": "soins"}, "responsible"),
        ({"kind": "PER", "local_part": "Claire Martin", "with_owner": True}, "local_part"),
        ({"kind": "PER", "local_part": "a..b", "with_owner": True}, "local_part"),
        ({"kind": "PER", "local_part": "-x", "with_owner": True}, "local_part"),
    ],
)
def test_invalid_creations_write_nothing(dovecot, kwargs: dict[str, object], code: str) -> None:
    structure = make_structure()
    owner = make_professional() if kwargs.pop("with_owner", False) else None
    with pytest.raises(ValidationError) as exc, TestCase.captureOnCommitCallbacks(execute=True):
        mailbox_create(structure=structure, display_name="x", owner=owner, actor=None, **kwargs)  # type: ignore[arg-type]
    assert exc.value.code == code
    assert not Mailbox.objects.exists()
    assert not AuditEvent.objects.filter(action="mailbox.created").exists()
    assert _served(dovecot) == set()


def test_address_taken_and_foreign_domain_are_refused(dovecot) -> None:
    ehpad = make_structure()
    ime = make_structure(name="IME", finess="690002001", domain="ime-les-coquelicots.mssante.fr")
    doctor = make_professional()
    make_mailbox(structure=ehpad, owner=doctor)

    with pytest.raises(ValidationError) as taken:
        mailbox_create(
            structure=ehpad,
            kind="PER",
            local_part="Claire.Martin",
            display_name="x",
            owner=doctor,
            actor=None,
        )
    with pytest.raises(ValidationError) as foreign:
        mailbox_create(
            structure=ime,
            kind="PER",
            local_part="x",
            domain=ehpad.domains.get(),
            display_name="x",
            owner=doctor,
            actor=None,
        )

    assert "existe déjà" in taken.value.messages[0]
    assert foreign.value.code == "domain"
    assert Mailbox.objects.count() == 1


def test_suspended_bal_stays_in_dovecot_close_removes_it_reactivate_refused_after_close(
    dovecot, tmp_path: Path, keys
) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    wait_provisioned(box.address)

    with TestCase.captureOnCommitCallbacks(execute=True):
        mailbox_suspend(mailbox=box, actor=None)
    assert _served(dovecot) == {box.address}
    deliver(box.address, make_message(subject="Reçu pendant la suspension"))

    # Closing exports the BAL first, encrypted to the structure's recovery key.
    recovery_key_set(structure=box.structure, armored=keys.public, actor=None)
    with (
        override_settings(EXPORT_DIR=tmp_path / "exports"),
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        mailbox_close(mailbox=box, actor=None)
    assert _served(dovecot) == set()
    with pytest.raises(ValidationError):
        mailbox_reactivate(mailbox=box, actor=None)
    actions = list(
        AuditEvent.objects.filter(target_id=str(box.public_id)).values_list("action", flat=True)
    )
    assert {"mailbox.created", "mailbox.suspended", "mailbox.closed"} <= set(actions)


def test_unknown_bal_is_refused_by_lmtp(dovecot) -> None:
    with (
        smtplib.LMTP(str(dovecot.lmtp_socket)) as lmtp,
        pytest.raises(smtplib.SMTPRecipientsRefused) as exc,
    ):
        lmtp.sendmail("a@b.mssante.fr", ["personne@ehpad-les-tilleuls.mssante.fr"], make_message())
    assert exc.value.recipients["personne@ehpad-les-tilleuls.mssante.fr"][0] == 550


def test_a_bal_opens_only_through_the_master_user(dovecot) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    wait_provisioned(box.address)

    with (
        IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap,
        pytest.raises(LoginError),
    ):
        imap.login(box.address, "")
    with (
        IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap,
        pytest.raises(LoginError),
    ):
        imap.login(f"{box.address}*{settings.DOVECOT_MASTER_USER}", "mauvais-mot-de-passe")
    with (
        IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap,
        pytest.raises(LoginError),
    ):
        imap.login(
            f"inconnu@ehpad-les-tilleuls.mssante.fr*{settings.DOVECOT_MASTER_USER}",
            settings.DOVECOT_MASTER_PASSWORD,
        )
    with IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap:
        imap.login(
            f"{box.address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD
        )
        assert {name for _f, _d, name in imap.list_folders()} == {
            "INBOX",
            "Drafts",
            "Sent",
            "Accuses",
            "Trash",
        }
