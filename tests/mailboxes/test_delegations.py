"""A personal BAL is its holder's (issue 16): only the holder delegates it (the console shows
delegations and cannot grant them), nobody gives themselves rights, the holder sees who can use
the BAL and until when and is told of every change by a notice in the BAL; a PER BAL created
for a professional who never signed in waits for that first sign-in. Mail written by anyone
but the holder names its author. Real Dovecot, the relay's local delivery, personas from
tests/personas.py."""

from __future__ import annotations

import email
import email.policy
import html
from datetime import timedelta
from email.message import EmailMessage

import pytest
from django.core.exceptions import ValidationError
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, User
from accounts.psc.claims import parse_userinfo
from accounts.services import user_sync_from_psc
from mailboxes.access import MISSING, Access
from mailboxes.console.services.people import NOT_THE_HOLDER, access_set
from mailboxes.errors import RightMissing
from mailboxes.models import Mailbox, MailboxAccess, OutboundMessage
from mailboxes.store.imap import MailStore
from mailboxes.transport.relay import message_relay
from tests.factories import grant, psc_sample
from tests.mailboxes.conftest import wait_provisioned
from tests.personas import Cast, client_for, make_cast

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(dovecot) -> Cast:
    cast = make_cast()
    wait_provisioned(cast.per.address, cast.soins.address)
    return cast


def text(response) -> str:
    return html.unescape(response.content.decode())


def notices(box: Mailbox) -> list[EmailMessage]:
    """Deliver the portal's pending notices (as the relay worker does), then read the
    notices in the BAL's INBOX, oldest first."""
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
    return [m for m in found if isinstance(m, EmailMessage)]


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


# --- Only the holder delegates ----------------------------------------------------------------


def test_the_console_shows_delegations_of_a_per_bal_but_cannot_grant_them(cast: Cast) -> None:
    director = client_for(cast.director)
    page = text(
        director.get(reverse("console:bal", args=[cast.structure.public_id, cast.per.public_id]))
    )
    assert "Sophie Petit" in page and "lecture" in page
    grant_url = reverse("console:bal_access", args=[cast.structure.public_id, cast.per.public_id])
    assert f'action="{grant_url}"' not in page  # no form to grant
    for person in (cast.director, cast.nurse):  # to themselves, or to someone else
        response = director.post(grant_url, {"person": str(person.public_id), "rights": "send"})
        assert response.status_code == 403
        assert NOT_THE_HOLDER in text(response)
    assert list(MailboxAccess.objects.filter(mailbox=cast.per).values_list("user", flat=True)) == [
        cast.secretary.pk
    ]
    # The service is the guard: neither a director nor the operator's tooling may delegate.
    for actor in (cast.director, None):
        with pytest.raises(RightMissing):
            access_set(mailbox=cast.per, user=cast.nurse, can_send=True, actor=actor)
    assert not MailboxAccess.objects.filter(mailbox=cast.per, user=cast.nurse).exists()


def test_a_delegate_cannot_pass_the_bal_on(cast: Cast) -> None:
    """Even a delegate who may read, organise and send does not manage the holder's BAL."""
    grant(cast.per, cast.secretary, can_organise=True, can_send=True)
    secretary = client_for(cast.secretary)
    page = secretary.get(reverse("mailboxes:delegations", args=[cast.per.public_id]))
    assert page.status_code == 403 and MISSING[Access.MANAGE] in text(page)
    forged = secretary.post(
        reverse("mailboxes:delegation_grant", args=[cast.per.public_id]),
        {"person": str(cast.nurse.public_id), "rights": "read"},
    )
    assert forged.status_code == 403
    with pytest.raises(RightMissing):
        access_set(mailbox=cast.per, user=cast.nurse, can_send=False, actor=cast.secretary)
    assert not MailboxAccess.objects.filter(mailbox=cast.per, user=cast.nurse).exists()


def test_nobody_gives_themselves_rights_on_a_bal(cast: Cast) -> None:
    director = client_for(cast.director)
    response = director.post(
        reverse("console:bal_access", args=[cast.structure.public_id, cast.soins.public_id]),
        {"person": str(cast.director.public_id), "rights": "manage"},
        follow=True,
    )
    assert "Personne ne peut s'accorder à soi-même des droits" in text(response)
    assert not MailboxAccess.objects.filter(mailbox=cast.soins, user=cast.director).exists()
    # A member who manages the team BAL may add others, never raise their own rights.
    grant(cast.soins, cast.nurse, can_organise=True, can_send=True, can_manage=True)
    with pytest.raises(ValidationError) as refused:
        access_set(
            mailbox=cast.soins, user=cast.nurse, can_send=True, can_manage=True,
            actor=cast.nurse,
        )  # fmt: skip
    assert refused.value.code == "self"
    added = access_set(mailbox=cast.soins, user=cast.secretary, can_send=False, actor=cast.nurse)
    assert added.rights_label == "lecture"
    # The holder of a PER BAL already has every right on it: nothing to give to themselves.
    with pytest.raises(ValidationError):
        access_set(mailbox=cast.per, user=cast.doctor, can_send=True, actor=cast.doctor)


# --- The holder sees who can use the BAL and is told of every change --------------------------


def test_the_holder_sees_who_can_use_the_bal_until_when_and_is_told_of_every_change(
    cast: Cast,
) -> None:
    doctor = client_for(cast.doctor)
    url = reverse("mailboxes:delegations", args=[cast.per.public_id])
    page = text(doctor.get(url))
    assert "Sophie Petit" in page and "sans date de fin" in page

    until = timezone.localdate() + timedelta(days=30)
    doctor.post(
        reverse("mailboxes:delegation_grant", args=[cast.per.public_id]),
        {"person": str(cast.nurse.public_id), "rights": "send", "until": until.isoformat()},
    )
    page = text(doctor.get(url))
    assert "Julien Bernard" in page and "lecture, classement, envoi" in page
    nurse_access = MailboxAccess.objects.get(mailbox=cast.per, user=cast.nurse)
    doctor.post(
        reverse("mailboxes:delegation_grant", args=[cast.per.public_id]),
        {"person": str(cast.nurse.public_id), "rights": "read", "replace": "on"},  # confirmed
    )
    doctor.post(
        reverse("mailboxes:delegation_revoke", args=[cast.per.public_id, nurse_access.public_id])
    )
    # The director may take a delegation back (never give one): the holder is told too.
    client_for(cast.director).post(
        reverse(
            "console:bal_revoke",
            args=[cast.structure.public_id, cast.per.public_id, cast.delegation.public_id],
        )
    )
    assert not MailboxAccess.objects.filter(mailbox=cast.per).exists()

    told = notices(cast.per)
    assert [m["Subject"] for m in told] == ["Les délégations de votre BAL ont changé"] * 5
    texts = [body(m) for m in told]
    # 1. the cast's read-only delegation, given by the doctor herself
    assert "Sophie Petit peut maintenant utiliser votre BAL (lecture)" in texts[0]
    assert "Claire Martin" in texts[0]  # who made the change
    # 2. the nurse, until a date, and everyone who can use the BAL now
    assert (
        "Julien Bernard peut maintenant utiliser votre BAL (lecture, classement, envoi)"
        in (texts[1])
    )
    assert f"Julien Bernard : lecture, classement, envoi, jusqu'au {until.day} " in texts[1]
    assert "Sophie Petit : lecture, sans date de fin" in texts[1]
    # 3. rights changed, 4. revoked by the holder, 5. revoked by the director, who is named
    assert "Les droits de Julien Bernard sont maintenant : lecture." in texts[2]
    assert "Julien Bernard ne peut plus utiliser votre BAL." in texts[3]
    assert "Sophie Petit ne peut plus utiliser votre BAL." in texts[4]
    assert f"Marc Lefebvre (identifiant national {cast.director.national_id})" in texts[4]
    assert "- personne" in texts[4]
    assert all(m["From"].addresses[0].username == "ne-pas-repondre" for m in told)


def test_the_holder_is_told_when_a_delegate_leaves_the_structure(cast: Cast) -> None:
    membership = Membership.objects.get(user=cast.secretary, structure=cast.structure)
    client_for(cast.director).post(
        reverse("console:person_remove", args=[cast.structure.public_id, membership.public_id])
    )
    assert not MailboxAccess.objects.filter(mailbox=cast.per).exists()
    last = body(notices(cast.per)[-1])
    assert "Sophie Petit ne fait plus partie de la structure : sa délégation est retirée." in last


# --- A PER BAL waits for its holder's first sign-in -------------------------------------------


def test_a_per_bal_for_someone_who_never_signed_in_waits_for_their_first_sign_in(
    cast: Cast,
) -> None:
    identity = parse_userinfo(psc_sample("userinfo_899700427885_HelperTest.json"))
    director = client_for(cast.director)
    domain = cast.structure.domains.get().domain
    with TestCase.captureOnCommitCallbacks(execute=True):  # Dovecot learns of the BAL
        created = director.post(
        reverse("console:bal_create", args=[cast.structure.public_id, "per"]),
            {"rpps": identity.national_id, "local_part": "kit.doc", "domain": domain,
             "display_name": "Dr Kit DOC"},
        )  # fmt: skip
    assert created.status_code == 302
    box = Mailbox.objects.get(address=f"kit.doc@{domain}")
    holder = box.owner
    assert holder is not None and holder.psc_refreshed_at is None  # known by national id only
    wait_provisioned(box.address)
    page = text(director.get(created["Location"]))
    assert "en attente de sa première connexion" in page

    # Nobody can be given the BAL before its holder signs in, not even by the holder's account.
    with pytest.raises(ValidationError) as refused:
        access_set(mailbox=box, user=cast.secretary, can_send=True, actor=holder)
    assert refused.value.code == "holder_pending"
    # A right left in the table (by an import, an older version) gives nothing either.
    MailboxAccess.objects.create(
        mailbox=box, user=cast.secretary, kind=MailboxAccess.Kind.DELEGATE, can_send=True
    )
    secretary = client_for(cast.secretary)
    folder = reverse("mailboxes:folder", args=[box.public_id])
    assert secretary.get(folder, {"dossier": "INBOX"}).status_code == 404
    assert box.address not in text(secretary.get(reverse("mailboxes:index")))

    # The holder signs in with Pro Santé Connect (the service the sign-in calls).
    holder = user_sync_from_psc(user=User.objects.get(pk=holder.pk), identity=identity)
    assert secretary.get(folder, {"dossier": "INBOX"}).status_code == 200
    assert "en attente" not in text(director.get(created["Location"]))
    access_set(mailbox=box, user=cast.nurse, can_send=False, actor=holder)
    assert client_for(cast.nurse).get(folder, {"dossier": "INBOX"}).status_code == 200


# --- Mail written by a delegate names its author ----------------------------------------------


def _sent_copy(box: Mailbox) -> tuple[int, EmailMessage]:
    with MailStore(box.address) as store:
        store.client.select_folder("Sent", readonly=True)
        [uid] = store.client.search(["ALL"])
        raw = store.client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return uid, message


@pytest.mark.parametrize("author", ["secretary", "nurse", "doctor"])
def test_mail_written_by_anyone_but_the_holder_names_its_author(cast: Cast, author: str) -> None:
    grant(cast.per, cast.secretary, can_organise=True, can_send=True)
    user, box, to = {
        "secretary": (cast.secretary, cast.per, cast.soins),
        "nurse": (cast.nurse, cast.soins, cast.per),
        "doctor": (cast.doctor, cast.per, cast.soins),
    }[author]
    client = client_for(user)
    sent = client.post(
        reverse("mailboxes:compose", args=[box.public_id]),
        {"de": str(box.public_id), "a": to.address, "objet": "Transmission", "corps": "Bonjour"},
    )
    assert sent.status_code == 302
    spooled = OutboundMessage.objects.get(mailbox=box, origin=OutboundMessage.Origin.WEBMAIL)
    message = email.message_from_bytes(bytes(spooled.content), policy=email.policy.default)
    uid, copy = _sent_copy(box)
    page = text(
        client.get(reverse("mailboxes:message", args=[box.public_id, uid]), {"dossier": "Sent"})
    )
    if author == "doctor":  # the holder writes from her own BAL: she is the From
        assert "Sender" not in message and "Sender" not in copy
        assert "Écrit par" not in page
        return
    # Neither has a personal BAL: the author is named at the BAL written from.
    name = {"secretary": "Sophie_PETIT", "nurse": "Julien_BERNARD"}[author]
    expected = f"{name}_EHPAD Les Tilleuls <{box.address}>"
    assert str(message["Sender"]) == expected and str(copy["Sender"]) == expected
    assert f"Écrit par</dt><dd>{expected}" in page.replace("\n", "")
