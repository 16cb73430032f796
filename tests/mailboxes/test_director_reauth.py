"""A director's sensitive actions need a recent Pro Santé Connect sign-in (issue 16): replace
the recovery key, remove a person, change a role, close, export, the rights on team BALs. With
an old sign-in each answers « Confirmez votre identité » and changes nothing; with a recent
one it is carried out. Replacing the recovery key keeps the previous fingerprint and tells
every director of the structure in their BAL. Personas from tests/personas.py."""

from __future__ import annotations

import email
import email.policy
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, TestCase
from django.urls import reverse

from accounts.models import AuditEvent, Membership, Structure
from mailboxes.console.services.jobs import job_run
from mailboxes.console.services.recovery_key import recovery_key_set
from mailboxes.models import Mailbox, MailboxAccess, MailboxExport, MailboxJob, OutboundMessage
from mailboxes.store.imap import MailStore
from mailboxes.transport.relay import message_relay
from tests.factories import make_mailbox, make_membership, make_professional
from tests.mailboxes.conftest import wait_provisioned
from tests.mailboxes.pgp import Keys
from tests.personas import Cast, client_for, make_cast

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(dovecot, keys: Keys, settings: Any, tmp_path: Path) -> Cast:
    settings.EXPORT_DIR = tmp_path / "exports"
    cast = make_cast()
    recovery_key_set(structure=cast.structure, armored=keys.public, actor=cast.director)
    wait_provisioned(cast.per.address, cast.soins.address)
    return cast


def text(response: Any) -> str:
    return html.unescape(response.content.decode())


@dataclass
class Sensitive:
    name: str
    do: Callable[[Client, Cast, Keys], Any]
    done: Callable[[Cast, Keys], bool]


def _key_now(c: Cast) -> str:
    return Structure.objects.get(pk=c.structure.pk).recovery_key_fingerprint


def _then_run_jobs(response: Any) -> Any:
    """What the store worker does with the close or export the console enqueued."""
    for job in MailboxJob.objects.filter(state=MailboxJob.State.QUEUED):
        job_run(public_id=str(job.public_id))
    return response


def _nurse_membership(c: Cast) -> Membership:
    return Membership.objects.get(user=c.nurse, structure=c.structure)


SENSITIVE = [
    Sensitive(
        "remplacer la clé de recouvrement",
        lambda cl, c, k: cl.post(
            reverse("console:recovery_key", args=[c.structure.public_id]),
            {"armored": k.other_public},
        ),
        lambda c, k: _key_now(c) != k.fingerprint,
    ),
    Sensitive(
        "donner un droit sur une BAL d'équipe",
        lambda cl, c, k: cl.post(
            reverse("console:bal_access", args=[c.structure.public_id, c.soins.public_id]),
            {"person": str(c.secretary.public_id), "rights": "read"},
        ),
        lambda c, k: MailboxAccess.objects.filter(mailbox=c.soins, user=c.secretary).exists(),
    ),
    Sensitive(
        "retirer un droit sur une BAL d'équipe",
        lambda cl, c, k: cl.post(
            reverse(
                "console:bal_revoke",
                args=[c.structure.public_id, c.soins.public_id, c.membership.public_id],
            )
        ),
        lambda c, k: not MailboxAccess.objects.filter(pk=c.membership.pk).exists(),
    ),
    Sensitive(
        "changer un rôle",
        lambda cl, c, k: cl.post(
            reverse("console:role", args=[c.structure.public_id, _nurse_membership(c).public_id]),
            {"role": "director"},
        ),
        lambda c, k: _nurse_membership(c).role == Membership.Role.DIRECTOR,
    ),
    Sensitive(
        "exporter une BAL",
        lambda cl, c, k: _then_run_jobs(
            cl.post(
                reverse("console:bal_export", args=[c.structure.public_id, c.soins.public_id]),
                {"confirm": c.soins.address},
            )
        ),
        lambda c, k: MailboxExport.objects.filter(mailbox=c.soins, purpose="export").exists(),
    ),
    Sensitive(
        "fermer une BAL",
        lambda cl, c, k: _then_run_jobs(
            cl.post(
                reverse("console:bal_close", args=[c.structure.public_id, c.soins.public_id]),
                {"confirm": c.soins.address},
            )
        ),
        lambda c, k: Mailbox.objects.get(pk=c.soins.pk).status == Mailbox.Status.CLOSED,
    ),
    Sensitive(
        "retirer une personne de la structure",
        lambda cl, c, k: cl.post(
            reverse(
                "console:person_remove",
                args=[c.structure.public_id, _nurse_membership(c).public_id],
            )
        ),
        lambda c, k: not Membership.objects.filter(user=c.nurse, structure=c.structure).exists(),
    ),
]


def test_each_sensitive_action_needs_a_recent_sign_in(cast: Cast, keys: Keys) -> None:
    stale = client_for(cast.director, recent=False)
    for action in SENSITIVE:
        response = action.do(stale, cast, keys)
        assert response.status_code == 401, action.name
        assert "Confirmez votre identité" in text(response), action.name
        assert not action.done(cast, keys), action.name
    fresh = client_for(cast.director)
    for action in SENSITIVE:  # in this order: the nurse leaves last, the BAL closes after export
        with TestCase.captureOnCommitCallbacks(execute=True):
            response = action.do(fresh, cast, keys)
        assert response.status_code in (200, 302), (action.name, response.status_code)
        assert action.done(cast, keys), action.name


def _inbox_notices(box: Mailbox) -> list[email.message.EmailMessage]:
    for spooled in OutboundMessage.objects.filter(origin=OutboundMessage.Origin.NOTICE):
        message_relay(public_id=str(spooled.public_id))
    with MailStore(box.address) as store:
        store.client.select_folder("INBOX", readonly=True)
        uids = store.client.search(["HEADER", "Auto-Submitted", "auto-generated"])
        fetched = store.client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    found = [
        email.message_from_bytes(fetched[uid][b"BODY[]"], policy=email.policy.default)
        for uid in sorted(fetched)
    ]
    return [m for m in found if isinstance(m, email.message.EmailMessage)]


def test_replacing_the_recovery_key_tells_every_director_and_keeps_the_previous_fingerprint(
    cast: Cast, keys: Keys
) -> None:
    own = make_mailbox(structure=cast.structure, owner=cast.director, local_part="marc.lefebvre")
    second = make_professional(first_name="Paule", last_name="Seconde")
    make_membership(second, cast.structure, Membership.Role.DIRECTOR)
    theirs = make_mailbox(structure=cast.structure, owner=second, local_part="paule.seconde")
    without = make_professional(first_name="Nadia", last_name="Sansbal")
    make_membership(without, cast.structure, Membership.Role.DIRECTOR)
    wait_provisioned(own.address, theirs.address)

    client = client_for(second)
    url = reverse("console:recovery_key", args=[cast.structure.public_id])
    assert client.post(url, {"armored": keys.other_public}).status_code == 302
    cast.structure.refresh_from_db()
    new = cast.structure.recovery_key_fingerprint
    assert new != keys.fingerprint
    assert cast.structure.recovery_key_previous_fingerprint == keys.fingerprint
    page = text(client.get(url))
    assert "Empreinte de la clé précédente" in page and keys.fingerprint in page

    for box in (own, theirs):
        last = _inbox_notices(box)[-1]
        assert last["Subject"] == "Clé de recouvrement de EHPAD Les Tilleuls remplacée"
        content = str(last.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
        assert new in content and f"remplace la clé d'empreinte {keys.fingerprint}" in content
        assert f"Paule Seconde (identifiant national {second.national_id})" in content
    trace = AuditEvent.objects.filter(action="structure.recovery_key_set").latest("id")
    assert trace.details["previous"] == keys.fingerprint and trace.details["fingerprint"] == new
    assert trace.details["notified"] == sorted([own.address, theirs.address])
    assert trace.details["unreachable"] == [without.national_id]
