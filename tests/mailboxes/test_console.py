"""The director's console over HTTP: every URL for every persona, the BAL lifecycle with its
traces, members and delegations (grant, use, end, revocation), invitations and roles, the
recovery key and closing, notices, the journal and the indicators."""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.core.cache import cache
from django.test import Client, TestCase
from django.urls import URLPattern, reverse
from django.utils import timezone

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import AuditEvent, Membership, Structure, User
from annuaire.models import DirectoryEntry
from mailboxes.console import urls as urls_console
from mailboxes.console.services.jobs import job_run
from mailboxes.console.services.lifecycle import mailbox_suspend
from mailboxes.console.services.people import access_set
from mailboxes.models import AppCertificate, Mailbox, MailboxAccess, MailboxExport, MailboxJob
from mailboxes.transport.gateway.policy import check_recipient, deliver
from mailboxes.transport.notices import NOTICE_BODY, notice_configure, notice_send
from tests.factories import (
    make_mailbox,
    make_membership,
    make_message,
    make_professional,
    make_structure,
)
from tests.mailboxes.conftest import wait_provisioned
from tests.mailboxes.pgp import Keys

pytestmark = pytest.mark.django_db


@dataclass
class World:
    tilleuls: Structure
    other: Structure
    director: User
    other_director: User
    nurse: User
    doctor: User
    secretary: User
    outsider: User
    per: Mailbox
    soins: Mailbox
    foreign: Mailbox


@pytest.fixture
def world(dovecot) -> World:
    tilleuls = make_structure()
    other = make_structure(
        name="Clinique du Parc", finess="690002365", domain="clinique-du-parc.mssante.fr"
    )
    director = make_professional(first_name="Hélène", last_name="Directrice")
    other_director = make_professional(first_name="Paul", last_name="Autre")
    nurse = make_professional(first_name="Inès", last_name="Infirmière", profession="60")
    doctor = make_professional(first_name="Claire", last_name="Martin")
    secretary = make_professional(first_name="Sophie", last_name="Secrétaire", profession="")
    outsider = make_professional(first_name="Olivier", last_name="Dehors")
    make_membership(director, tilleuls, Membership.Role.DIRECTOR)
    make_membership(other_director, other, Membership.Role.DIRECTOR)
    for person in (nurse, doctor, secretary):
        make_membership(person, tilleuls)
    per = make_mailbox(structure=tilleuls, owner=doctor)
    soins = make_mailbox(
        structure=tilleuls, kind="ORG", local_part="soins", responsible=director,
        display_name="Soins",
    )  # fmt: skip
    foreign = make_mailbox(
        structure=other, kind="ORG", local_part="accueil", responsible=other_director,
        display_name="Accueil",
    )  # fmt: skip
    return World(
        tilleuls, other, director, other_director, nurse, doctor, secretary, outsider, per,
        soins, foreign,
    )  # fmt: skip


def text(response: Any) -> str:
    """The page as a person reads it (entities decoded)."""
    return html.unescape(response.content.decode())


def signed_in(user: User, *, recent: bool = True) -> Client:
    """A browser session as after a Pro Santé Connect sign-in (recent, or an hour old)."""
    client = Client()
    client.force_login(user)
    session = client.session
    session[AUTH_AT_SESSION_KEY] = int(time.time()) - (0 if recent else 3600)
    session.save()
    return client


@pytest.fixture(autouse=True)
def _exports(settings: Any, tmp_path: Path) -> None:
    settings.EXPORT_DIR = tmp_path / "exports"


# --- Every console URL, every persona ---------------------------------------------------------


def _console_urls(w: World) -> list[tuple[str, str]]:
    """(method, url) for every pattern of the console, on objects of « Les Tilleuls »."""
    access = access_set(mailbox=w.soins, user=w.nurse, can_send=True, actor=w.director)
    export = MailboxExport.objects.create(
        mailbox=w.soins, purpose="export", path="x", size=1, sha256="0" * 64, messages=0,
        folders=0, key_fingerprint="F" * 40,
    )  # fmt: skip
    membership = Membership.objects.get(user=w.nurse, structure=w.tilleuls)
    job = MailboxJob.objects.create(mailbox=w.soins, kind="export", state="termine", export=export)
    certificate = AppCertificate.objects.create(
        mailbox=w.soins, fingerprint="b" * 64, common_name="robot.tilleuls-test.fr", subject="x",
        issuer="x", serial="1", not_after=timezone.now() + timedelta(days=30), pem="x",
    )  # fmt: skip
    values = {
        "structure_id": w.tilleuls.public_id,
        "bal_id": w.soins.public_id,
        "kind": "org",
        "access_id": access.public_id,
        "export_id": export.public_id,
        "job_id": job.public_id,
        "membership_id": membership.public_id,
        "certificate_id": certificate.public_id,
    }
    urls = []
    for pattern in urls_console.urlpatterns:
        assert isinstance(pattern, URLPattern)
        kwargs = {k: values[k] for k in pattern.pattern.converters}
        url = reverse(f"console:{pattern.name}", kwargs=kwargs)
        urls.append(("GET", url))
        urls.append(("POST", url))
    return urls


def test_every_console_url_answers_404_to_anyone_but_the_structures_director(world) -> None:
    urls = _console_urls(world)
    assert len(urls) == 2 * len(urls_console.urlpatterns)
    found_404: set[str] = set()
    for persona in (world.other_director, world.nurse, world.doctor, world.outsider):
        client = signed_in(persona)
        for method, url in urls:
            own = (reverse("console:home"), reverse("console:publication"))
            if url in own and persona == world.other_director:
                # Their own console home and annuaire page, which never show ours.
                assert world.soins.address not in client.get(url).content.decode()
                continue
            response = client.get(url) if method == "GET" else client.post(url, {})
            # 405 (a method this URL never accepts, whoever asks) reveals nothing.
            assert response.status_code in (404, 405), (persona, method, url)
            if response.status_code == 405:
                assert method not in response["Allow"]
            else:
                found_404.add(url)
    assert found_404 == {url for _method, url in urls}
    anonymous = Client()
    for method, url in urls:
        response = anonymous.get(url) if method == "GET" else anonymous.post(url, {})
        assert response.status_code in (302, 405), url
        if response.status_code == 302:
            assert response["Location"].startswith(reverse("accounts:login"))
    # The director reaches every page (GET), none of them fails.
    client = signed_in(world.director)
    for method, url in urls:
        if method == "GET":
            assert client.get(url).status_code in (200, 302, 404, 405), url
    assert (
        client.get(reverse("console:structure", args=[world.tilleuls.public_id])).status_code == 200
    )


def test_the_other_director_sees_only_their_own_structure(world) -> None:
    client = signed_in(world.other_director)
    home = client.get(reverse("console:home"))
    assert home.status_code == 302
    assert str(world.other.public_id) in home["Location"]
    page = text(client.get(home["Location"]))
    assert "accueil@clinique-du-parc.mssante.fr" in page
    assert "soins@" not in page
    # A BAL of Les Tilleuls under the other structure's URL: 404 too.
    url = reverse("console:bal", args=[world.other.public_id, world.soins.public_id])
    assert client.get(url).status_code == 404


def test_the_list_shows_each_bal_with_its_people_state_and_size(world) -> None:
    access_set(mailbox=world.soins, user=world.nurse, can_send=True, actor=world.director)
    from tests.mailboxes.conftest import deliver as lmtp_deliver

    lmtp_deliver(world.soins.address, make_message(subject="Transmission"))
    cache.delete(f"bal-size:{world.soins.address}")  # sizes are cached for ten minutes
    page = signed_in(world.director).get(
        reverse("console:structure", args=[world.tilleuls.public_id])
    )
    html = text(page)
    assert "soins@ehpad-les-tilleuls.mssante.fr" in html
    assert "Inès Infirmière" in html  # the member
    assert "Claire Martin" in html  # the holder of the PER BAL
    assert "Active" in html
    assert re.search(r"\d+(,\d)?\s(octets?|Ko|Mo)", html)  # a size, in French


# --- Creating BALs ----------------------------------------------------------------------------


def test_director_creates_an_org_bal_with_responsible_and_trace(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:bal_create", args=[world.tilleuls.public_id, "org"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            url,
            {
                "local_part": "Secretariat-Medical",
                "domain": "ehpad-les-tilleuls.mssante.fr",
                "display_name": "Secrétariat médical",
                "service": "Accueil",
                "description": "Rendez-vous et comptes rendus",
                "responsible": str(world.doctor.public_id),
            },
        )
    box = Mailbox.objects.get(address="secretariat-medical@ehpad-les-tilleuls.mssante.fr")
    assert response.status_code == 302 and response["Location"].endswith(f"{box.public_id}/")
    assert (box.kind, box.responsible, box.service) == ("ORG", world.doctor, "Accueil")
    trace = AuditEvent.objects.get(action="mailbox.created", target_id=str(box.public_id))
    assert trace.actor == world.director
    wait_provisioned(box.address)


def test_app_bal_form_suggests_noreply_and_refuses_a_bad_local_part(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:bal_create", args=[world.tilleuls.public_id, "app"])
    assert 'value="-noreply"' in text(client.get(url))
    response = client.post(
        url,
        {
            "local_part": "résultats labo",
            "domain": "ehpad-les-tilleuls.mssante.fr",
            "responsible": str(world.director.public_id),
        },
    )
    assert response.status_code == 200
    assert "La partie locale de l'adresse n'est pas valide." in text(response)
    assert not Mailbox.objects.filter(kind="APP").exists()


def _annuaire_person(national_id: str, first: str, last: str) -> None:
    DirectoryEntry.objects.create(
        bal_type="PER", address=f"x{national_id}@medecin.mssante.fr", pp_national_id=national_id,
        first_name=first, last_name=last, profession_label="Médecin", domain="medecin.mssante.fr",
        row_hash=national_id[:32],
    )  # fmt: skip


def test_per_bal_for_a_professional_known_only_to_the_annuaire(world) -> None:
    _annuaire_person("810003456789", "Jean-Marc", "N'DIAYE")
    client = signed_in(world.director)
    url = reverse("console:bal_create", args=[world.tilleuls.public_id, "per"])
    found = text(client.get(url, {"q": "810003456789"}))
    assert "Jean-Marc N&#x27;DIAYE" in found or "Jean-Marc N'DIAYE" in found
    proposal = text(client.get(url, {"rpps": "810003456789"}))
    assert 'value="jean-marc.ndiaye"' in proposal
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            url,
            {
                "rpps": "810003456789",
                "local_part": "jean-marc.ndiaye",
                "domain": "ehpad-les-tilleuls.mssante.fr",
                "display_name": "",
            },
        )
    assert response.status_code == 302
    box = Mailbox.objects.get(address="jean-marc.ndiaye@ehpad-les-tilleuls.mssante.fr")
    holder = box.owner
    assert holder is not None and holder.national_id == "810003456789"
    assert (holder.first_name, holder.last_name) == ("Jean-Marc", "N'DIAYE")
    assert Membership.objects.filter(user=holder, structure=world.tilleuls).exists()
    actions = set(AuditEvent.objects.filter(actor=world.director).values_list("action", flat=True))
    assert {"membership.added", "mailbox.created"} <= actions


def test_a_second_claire_martin_gets_a_numbered_address(world) -> None:
    namesake = make_professional(first_name="Claire", last_name="Martin")
    make_membership(namesake, world.tilleuls)
    client = signed_in(world.director)
    url = reverse("console:bal_create", args=[world.tilleuls.public_id, "per"])
    page = text(client.get(url, {"personne": str(namesake.public_id)}))
    assert 'value="claire.martin2"' in page


def test_per_bal_refused_for_someone_who_already_has_one(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:bal_create", args=[world.tilleuls.public_id, "per"])
    response = client.post(
        url,
        {
            "personne": str(world.doctor.public_id),
            "local_part": "claire.martin.bis",
            "domain": "ehpad-les-tilleuls.mssante.fr",
        },
    )
    assert "a déjà une BAL personnelle" in text(response)
    assert Mailbox.objects.filter(owner=world.doctor).count() == 1


# --- Editing, suspending ----------------------------------------------------------------------


def test_edit_details_responsible_and_liste_rouge(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:bal_edit", args=[world.tilleuls.public_id, world.soins.public_id])
    client.post(
        url,
        {
            "display_name": "Pôle soins",
            "service": "Soins infirmiers",
            "description": "Transmissions",
            "liste_rouge": "on",
            "responsible": str(world.nurse.public_id),
        },
    )
    world.soins.refresh_from_db()
    assert (world.soins.display_name, world.soins.responsible, world.soins.liste_rouge) == (
        "Pôle soins", world.nurse, True,
    )  # fmt: skip
    trace = AuditEvent.objects.get(action="mailbox.updated")
    assert trace.actor == world.director
    assert set(trace.details["fields"]) >= {"display_name", "responsible", "liste_rouge"}
    # An outsider cannot be made responsible.
    client.post(url, {"display_name": "Pôle soins", "responsible": str(world.outsider.public_id)})
    world.soins.refresh_from_db()
    assert world.soins.responsible == world.nurse


def test_suspended_bal_refuses_new_mail_temporarily_and_comes_back(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:bal_status", args=[world.tilleuls.public_id, world.soins.public_id])
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.post(url, {"action": "suspend"})
    world.soins.refresh_from_db()
    assert world.soins.status == "suspended"
    reply = check_recipient(world.soins.address)
    assert reply is not None and reply.startswith("450 4.2.1")
    assert AuditEvent.objects.get(action="mailbox.suspended").actor == world.director
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.post(url, {"action": "reactivate"})
    assert check_recipient(world.soins.address) is None


# --- Members and delegations ------------------------------------------------------------------


def test_member_added_by_the_director_sees_the_bal_then_loses_it_at_once(world) -> None:
    director = signed_in(world.director)
    director.post(
        reverse("console:bal_access", args=[world.tilleuls.public_id, world.soins.public_id]),
        {"person": str(world.nurse.public_id), "rights": "send"},
    )
    access = MailboxAccess.objects.get(mailbox=world.soins, user=world.nurse)
    assert (access.can_read, access.can_send, access.can_manage) == (True, True, False)
    nurse = signed_in(world.nurse)
    assert world.soins.address in text(nurse.get(reverse("mailboxes:index")))
    folder = reverse("mailboxes:folder", args=[world.soins.public_id])
    assert nurse.get(folder, {"dossier": "INBOX"}).status_code == 200
    director.post(
        reverse(
            "console:bal_revoke",
            args=[world.tilleuls.public_id, world.soins.public_id, access.public_id],
        )
    )
    assert nurse.get(folder, {"dossier": "INBOX"}).status_code == 404
    assert world.soins.address not in text(nurse.get(reverse("mailboxes:index")))
    actions = list(
        AuditEvent.objects.filter(target_id=str(world.soins.public_id))
        .order_by("id")
        .values_list("action", "actor")
    )
    assert ("mailbox.access_granted", world.director.pk) in actions
    assert ("mailbox.access_revoked", world.director.pk) in actions


def test_someone_outside_the_structure_cannot_become_a_member(world) -> None:
    director = signed_in(world.director)
    response = director.post(
        reverse("console:bal_access", args=[world.tilleuls.public_id, world.soins.public_id]),
        {"person": str(world.outsider.public_id), "rights": "read"},
    )
    assert response.status_code == 302
    assert not MailboxAccess.objects.exists()


def test_holder_delegates_to_the_secretary_who_uses_it_until_revoked(world) -> None:
    doctor = signed_in(world.doctor)
    page = doctor.get(reverse("mailboxes:delegations", args=[world.per.public_id]))
    assert "Sophie Secrétaire" in text(page)
    until = (timezone.localdate() + timedelta(days=30)).isoformat()
    doctor.post(
        reverse("mailboxes:delegation_grant", args=[world.per.public_id]),
        {"person": str(world.secretary.public_id), "rights": "send", "until": until},
    )
    access = MailboxAccess.objects.get(mailbox=world.per, user=world.secretary)
    assert access.kind == "delegate" and access.can_send and access.expires_at is not None
    assert timezone.localtime(access.expires_at).date().isoformat() == until
    secretary = signed_in(world.secretary)
    assert world.per.address in text(secretary.get(reverse("mailboxes:index")))
    compose = secretary.get(reverse("mailboxes:compose", args=[world.per.public_id]))
    assert compose.status_code == 200
    # Reading through the delegation is traced under the secretary's own identity.
    secretary.get(reverse("mailboxes:folder", args=[world.per.public_id]), {"dossier": "INBOX"})
    assert AuditEvent.objects.filter(
        action="message.list", actor=world.secretary, target_id=str(world.per.public_id)
    ).exists()
    doctor.post(
        reverse("mailboxes:delegation_revoke", args=[world.per.public_id, access.public_id])
    )
    folder = reverse("mailboxes:folder", args=[world.per.public_id])
    assert secretary.get(folder, {"dossier": "INBOX"}).status_code == 404


def test_a_new_delegation_asks_before_it_replaces_the_existing_one(world) -> None:
    first = (timezone.localdate() + timedelta(days=30)).isoformat()
    doctor = signed_in(world.doctor)
    url = reverse("mailboxes:delegation_grant", args=[world.per.public_id])
    doctor.post(url, {"person": str(world.secretary.public_id), "rights": "send", "until": first})
    granted = MailboxAccess.objects.get(mailbox=world.per, user=world.secretary)
    # A second grant to the same person shows what exists and changes nothing yet.
    page = doctor.post(url, {"person": str(world.secretary.public_id), "rights": "read"})
    html = text(page)
    assert page.status_code == 200
    assert "Remplacer les droits existants ?" in html
    assert "Lecture, classement, envoi" in html  # the current rights, in words
    assert "Lecture — sans date de fin" in html  # the new ones
    kept = MailboxAccess.objects.get(pk=granted.pk)
    assert (kept.can_send, kept.expires_at) == (True, granted.expires_at)
    assert AuditEvent.objects.filter(action="mailbox.access_changed").count() == 0
    # Confirmed: the same form posted again with « replace ».
    response = doctor.post(
        url, {"person": str(world.secretary.public_id), "rights": "read", "replace": "on"}
    )
    assert response.status_code == 302
    replaced = MailboxAccess.objects.get(pk=granted.pk)
    assert (replaced.can_send, replaced.expires_at) == (False, None)
    assert AuditEvent.objects.filter(action="mailbox.access_changed").count() == 1
    # The director's console asks the same for a member of an ORG BAL.
    director = signed_in(world.director)
    console_url = reverse(
        "console:bal_access", args=[world.tilleuls.public_id, world.soins.public_id]
    )
    director.post(console_url, {"person": str(world.nurse.public_id), "rights": "send"})
    page = director.post(console_url, {"person": str(world.nurse.public_id), "rights": "manage"})
    assert "Remplacer les droits existants ?" in text(page)
    assert not MailboxAccess.objects.get(mailbox=world.soins, user=world.nurse).can_manage


def test_a_delegation_ends_by_itself_at_its_end_date(world) -> None:
    access = access_set(
        mailbox=world.per, user=world.secretary, can_send=False, actor=world.doctor,
        expires_at=timezone.now() + timedelta(hours=1),
    )  # fmt: skip
    secretary = signed_in(world.secretary)
    folder = reverse("mailboxes:folder", args=[world.per.public_id])
    assert secretary.get(folder, {"dossier": "INBOX"}).status_code == 200
    MailboxAccess.objects.filter(pk=access.pk).update(expires_at=timezone.now() - timedelta(1))
    assert secretary.get(folder, {"dossier": "INBOX"}).status_code == 404


def test_delegation_needs_a_recent_psc_sign_in(world) -> None:
    doctor = signed_in(world.doctor, recent=False)
    response = doctor.post(
        reverse("mailboxes:delegation_grant", args=[world.per.public_id]),
        {"person": str(world.secretary.public_id), "rights": "read"},
        HTTP_REFERER=f"http://testserver/bal/{world.per.public_id}/delegations/",
    )
    assert response.status_code == 401
    html = text(response)
    assert "Confirmez votre identité" in html
    assert f'value="/bal/{world.per.public_id}/delegations/"' in html
    assert not MailboxAccess.objects.exists()
    # The director's console too, for a PER BAL.
    director = signed_in(world.director, recent=False)
    response = director.post(
        reverse("console:bal_access", args=[world.tilleuls.public_id, world.per.public_id]),
        {"person": str(world.secretary.public_id), "rights": "read"},
    )
    assert response.status_code == 401 and not MailboxAccess.objects.exists()


def test_only_the_holder_manages_delegations_of_a_per_bal(world) -> None:
    url = reverse("mailboxes:delegations", args=[world.per.public_id])
    assert signed_in(world.secretary).get(url).status_code == 404
    assert signed_in(world.director).get(url).status_code == 404


# --- People and roles -------------------------------------------------------------------------


def test_invite_by_national_id_names_the_person_from_the_annuaire(world) -> None:
    _annuaire_person("810009876540", "Amélie", "POULAIN")
    client = signed_in(world.director)
    url = reverse("console:people", args=[world.tilleuls.public_id])
    response = client.post(url, {"national_id": "810009876540"})
    assert response.status_code == 302
    invited = User.objects.get(national_id="810009876540")
    assert (invited.first_name, invited.last_name) == ("Amélie", "POULAIN")
    assert not invited.has_usable_password()
    again = client.post(url, {"national_id": "10009876540"})  # the RPPS alone: the same person
    assert "fait déjà partie de la structure" in text(again)
    garbage = client.post(url, {"national_id": "<script>"})
    assert garbage.status_code == 400 and "ne connaît aucun professionnel" in text(garbage)


def test_invite_checks_the_rpps_key_and_its_length(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:people", args=[world.tilleuls.public_id])
    wrong_key = client.post(url, {"national_id": "1000 987 6543"})
    assert wrong_key.status_code == 400
    assert "La clé du numéro RPPS 10009876543 est incorrecte" in text(wrong_key)
    short = client.post(url, {"national_id": "1000987"})
    assert short.status_code == 400 and "11 chiffres" in text(short)
    assert not User.objects.filter(national_id__startswith="81000987").exists()


def test_invite_by_name_through_the_annuaire(world) -> None:
    _annuaire_person("810009876540", "Amélie", "POULAIN")
    _annuaire_person("810003456786", "Jean-Marc", "N'DIAYE")
    _annuaire_person("810001234565", "Jeanne", "N'DIAYE")
    from annuaire.models import DirectoryEntry
    from annuaire.search import norm

    for entry in DirectoryEntry.objects.all():  # as the annuaire's import writes them
        entry.name_norm, entry.given_norm = norm(entry.last_name), norm(entry.first_name)
        entry.save(update_fields=["name_norm", "given_norm"])
    client = signed_in(world.director)
    url = reverse("console:people", args=[world.tilleuls.public_id])
    assert client.post(url, {"national_id": "Poulain"}).status_code == 302
    assert User.objects.get(national_id="810009876540").last_name == "POULAIN"
    # Two of that name: the page offers both, and invites nobody yet.
    page = text(client.post(url, {"national_id": "N'Diaye"}))
    assert "Plusieurs professionnels" in page
    assert "Inviter Jean-Marc N'DIAYE" in page and "Inviter Jeanne N'DIAYE" in page
    assert not User.objects.filter(national_id="810003456786").exists()
    assert client.post(url, {"national_id": "810003456786"}).status_code == 302
    nobody = client.post(url, {"national_id": "Zyxwvut"})
    assert nobody.status_code == 400 and "ne connaît aucun professionnel" in text(nobody)


def test_invite_warns_about_an_identifier_the_annuaire_does_not_know(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:people", args=[world.tilleuls.public_id])
    page = client.post(url, {"national_id": "99700427885"})  # a valid key, unknown here
    assert page.status_code == 200
    assert "L'Annuaire Santé ne connaît pas l'identifiant 899700427885" in text(page)
    assert not User.objects.filter(national_id="899700427885").exists()
    anyway = client.post(url, {"national_id": "899700427885", "anyway": "on"})
    assert anyway.status_code == 302
    assert Membership.objects.filter(
        structure=world.tilleuls, user__national_id="899700427885"
    ).exists()


def test_role_change_needs_recent_sign_in_and_keeps_one_director(world) -> None:
    nurse_membership = Membership.objects.get(user=world.nurse, structure=world.tilleuls)
    own = Membership.objects.get(user=world.director, structure=world.tilleuls)
    stale = signed_in(world.director, recent=False)
    url = reverse("console:role", args=[world.tilleuls.public_id, nurse_membership.public_id])
    assert stale.post(url, {"role": "director"}).status_code == 401
    nurse_membership.refresh_from_db()
    assert nurse_membership.role == "member"
    client = signed_in(world.director)
    own_url = reverse("console:role", args=[world.tilleuls.public_id, own.public_id])
    client.post(own_url, {"role": "member"})
    own.refresh_from_db()
    assert own.role == "director"  # the last director stays
    client.post(url, {"role": "director"})
    nurse_membership.refresh_from_db()
    assert nurse_membership.role == "director"
    assert (
        signed_in(world.nurse)
        .get(reverse("console:structure", args=[world.tilleuls.public_id]))
        .status_code
        == 200
    )
    trace = AuditEvent.objects.filter(action="membership.role_changed").latest("id")
    assert trace.actor == world.director and trace.details["new_role"] == "director"


def test_removing_a_person_takes_their_rights_with_them(world) -> None:
    access_set(mailbox=world.soins, user=world.nurse, can_send=True, actor=world.director)
    membership = Membership.objects.get(user=world.nurse, structure=world.tilleuls)
    signed_in(world.director).post(
        reverse("console:person_remove", args=[world.tilleuls.public_id, membership.public_id])
    )
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert not MailboxAccess.objects.filter(user=world.nurse).exists()
    holder = Membership.objects.get(user=world.doctor, structure=world.tilleuls)
    response = signed_in(world.director).post(
        reverse("console:person_remove", args=[world.tilleuls.public_id, holder.public_id]),
        follow=True,
    )
    assert "titulaire d'une BAL personnelle" in text(response)
    assert Membership.objects.filter(pk=holder.pk).exists()


# --- Recovery key, export and close -----------------------------------------------------------


def test_close_without_a_recovery_key_is_refused_with_an_explanation(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:bal_close", args=[world.tilleuls.public_id, world.soins.public_id])
    response = client.post(url, {"confirm": world.soins.address})
    assert response.status_code == 409
    assert "Aucune clé de recouvrement" in text(response)
    world.soins.refresh_from_db()
    assert world.soins.status == "active"


def test_close_needs_a_recent_sign_in_and_the_typed_address(world, keys: Keys) -> None:
    url = reverse("console:bal_close", args=[world.tilleuls.public_id, world.soins.public_id])
    assert signed_in(world.director, recent=False).get(url).status_code == 401
    client = signed_in(world.director)
    key_url = reverse("console:recovery_key", args=[world.tilleuls.public_id])
    assert client.post(key_url, {"armored": keys.secret}).status_code == 400
    client.post(key_url, {"armored": keys.public})
    world.tilleuls.refresh_from_db()
    assert world.tilleuls.recovery_key_fingerprint == keys.fingerprint
    wrong = client.post(url, {"confirm": "autre@ehpad-les-tilleuls.mssante.fr"})
    assert wrong.status_code == 400 and "ne correspond pas" in text(wrong)
    from tests.mailboxes.conftest import deliver as lmtp_deliver

    lmtp_deliver(world.soins.address, make_message(subject="Dernier message"))
    with TestCase.captureOnCommitCallbacks(execute=True):
        done = client.post(url, {"confirm": world.soins.address})
    assert done.status_code == 302
    job_run(public_id=str(MailboxJob.objects.get(mailbox=world.soins).public_id))  # the worker
    world.soins.refresh_from_db()
    assert world.soins.status == "closed"
    export = MailboxExport.objects.get(mailbox=world.soins)
    assert export.purpose == "close" and export.messages == 1
    page = text(client.get(done["Location"]))
    assert export.sha256 in page
    download = client.get(
        reverse("console:export_download", args=[world.tilleuls.public_id, export.public_id])
    )
    body = b"".join(download.streaming_content)  # type: ignore[attr-defined]
    decrypted = keys.gpg.decrypt(body)
    assert decrypted.ok, decrypted.status
    assert AuditEvent.objects.get(action="mailbox.closed", result="success").actor == world.director


# --- Notices ----------------------------------------------------------------------------------


def test_new_mail_notice_carries_no_health_data_and_is_rate_limited(world) -> None:
    client = signed_in(world.director)
    url = reverse("console:bal_notice", args=[world.tilleuls.public_id, world.soins.public_id])
    refused = client.post(
        url, {"notice_email": "moi@medecin.mssante.fr", "notice_interval_minutes": 30},
        follow=True,
    )  # fmt: skip
    assert "hors de l'espace de confiance" in text(refused)
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.post(url, {"notice_email": "cadre@exemple.fr", "notice_interval_minutes": 30})
    world.soins.refresh_from_db()
    assert world.soins.notice_email == "cadre@exemple.fr"
    raw = make_message(subject="Résultats de M. Dupont", body="Hémoglobine 9 g/dl")
    sent_tasks: list[int] = []
    with TestCase.captureOnCommitCallbacks(execute=False) as callbacks:
        assert deliver("labo@autre.mssante.fr", [world.soins.address], raw).startswith("250")
        assert deliver("labo@autre.mssante.fr", [world.soins.address], raw).startswith("250")
    assert len(callbacks) == 1  # one notice for two messages within the interval
    sent_tasks.append(world.soins.pk)
    assert notice_send(mailbox_id=sent_tasks[0])
    assert len(mail.outbox) == 1
    notice = mail.outbox[0]
    assert notice.to == ["cadre@exemple.fr"]
    assert "Vous avez un nouveau message sur votre messagerie MSSanté" in notice.body
    for secret in ("Dupont", "Hémoglobine", "labo@", world.soins.address, "Résultats"):
        assert secret not in notice.body and secret not in notice.subject
    assert notice.body == NOTICE_BODY.format(url=settings.SITE_URL)
    assert AuditEvent.objects.filter(action="mailbox.notice_sent").count() == 1


def test_no_notice_for_a_suspended_bal_or_without_an_address(world) -> None:
    notice_configure(mailbox=world.soins, email="cadre@exemple.fr", interval_minutes=5, actor=None)
    with TestCase.captureOnCommitCallbacks(execute=True):
        mailbox_suspend(mailbox=world.soins, actor=None)
    assert not notice_send(mailbox_id=world.soins.pk)
    assert not notice_send(mailbox_id=world.per.pk)
    assert mail.outbox == []


# --- Journal and indicators -------------------------------------------------------------------


def test_journal_filters_and_exports_only_the_structures_traces(world) -> None:
    access_set(mailbox=world.soins, user=world.nurse, can_send=True, actor=world.director)
    nurse = signed_in(world.nurse)
    nurse.get(reverse("mailboxes:folder", args=[world.soins.public_id]), {"dossier": "INBOX"})
    client = signed_in(world.director)
    url = reverse("console:journal", args=[world.tilleuls.public_id])
    page = client.get(url, {"bal": str(world.soins.public_id), "personne": "Infirmière"})
    html = text(page)
    assert page.status_code == 200
    assert "Inès Infirmière" in html
    assert "accueil@clinique-du-parc" not in html
    assert "Dossier : Boîte de réception" in html  # the opened folder, in words
    csv = client.get(reverse("console:journal_csv", args=[world.tilleuls.public_id]))
    content = b"".join(csv.streaming_content).decode("utf-8")  # type: ignore[attr-defined]
    assert content.startswith("\ufeffDate;Heure;Auteur")
    assert "soins@ehpad-les-tilleuls.mssante.fr" in content
    assert "accueil@clinique-du-parc" not in content
    assert csv["Content-Type"].startswith("text/csv")


def test_indicators_page_draws_the_charts_and_exports_csv(world) -> None:
    from mailboxes.console.services.usage import usage_compute

    deliver("labo@autre.mssante.fr", [world.soins.address], make_message())
    from accounts.audit import audit_record

    audit_record(
        action="gateway.received", actor_label="CN=autre", target_type="message",
        target_id="<m1@autre>",
        details={"from": "labo@autre.mssante.fr", "to": [world.soins.address]},
    )  # fmt: skip
    usage_compute()
    client = signed_in(world.director)
    page = client.get(
        reverse("console:indicators", args=[world.tilleuls.public_id]),
        {"bal": str(world.soins.public_id)},
    )
    html = text(page)
    assert page.status_code == 200
    assert "<svg" in html and "autre.mssante.fr" in html
    csv = client.get(reverse("console:indicators_csv", args=[world.tilleuls.public_id]))
    content = b"".join(csv.streaming_content).decode("utf-8")  # type: ignore[attr-defined]
    assert content.startswith("\ufeffMois;BAL")
    assert "soins@ehpad-les-tilleuls.mssante.fr" in content


def test_operator_staff_administer_every_structure(world) -> None:
    staff = make_professional(first_name="Opé", last_name="Rateur")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    client = signed_in(staff)
    page = text(client.get(reverse("console:home")))
    assert "EHPAD Les Tilleuls" in page and "Clinique du Parc" in page
    for structure in (world.tilleuls, world.other):
        url = reverse("console:structure", args=[structure.public_id])
        assert client.get(url).status_code == 200
