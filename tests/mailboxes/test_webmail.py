"""The webmail's reading side against a real Dovecot: personas, listing, reading, actions,
search, traces."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.test import Client

from accounts.models import AuditEvent, User
from mailboxes.models import Mailbox
from tests.factories import (
    grant,
    make_mailbox,
    make_membership,
    make_message,
    make_professional,
    make_structure,
)
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db


@dataclass
class World:
    doctor: User
    nurse: User
    secretary: User
    outsider: User
    other_director: User
    per: Mailbox
    org: Mailbox


@pytest.fixture
def world(dovecot) -> World:
    ehpad = make_structure()
    ime = make_structure(
        name="IME Les Coquelicots", finess="690002001", domain="ime-les-coquelicots.mssante.fr"
    )
    doctor = make_professional(first_name="Claire", last_name="Martin")
    nurse = make_professional(first_name="Julien", last_name="Bernard", profession="60")
    secretary = make_professional(first_name="Sophie", last_name="Petit", profession="")
    outsider = make_professional(first_name="Inconnu", last_name="Extérieur")
    other_director = make_professional(first_name="Karim", last_name="Haddad")
    make_membership(other_director, ime, role="director")
    per = make_mailbox(
        structure=ehpad, local_part="claire.martin", owner=doctor, display_name="Dr Claire Martin"
    )
    org = make_mailbox(
        structure=ehpad,
        kind="ORG",
        local_part="soins",
        responsible=doctor,
        display_name="Équipe soins",
    )
    grant(org, nurse, can_send=True)
    grant(org, doctor, can_send=True, can_manage=True)
    grant(per, secretary, can_send=True)
    wait_provisioned(per.address, org.address)
    return World(doctor, nurse, secretary, outsider, other_director, per, org)


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _urls(box: Mailbox, uid: int = 1) -> list[tuple[str, str, dict[str, object]]]:
    base = f"/bal/{box.public_id}"
    return [
        ("get", f"{base}/?dossier=INBOX", {}),
        ("get", f"{base}/messages/{uid}/?dossier=INBOX", {}),
        ("get", f"{base}/messages/{uid}/contenu/?dossier=INBOX", {}),
        ("get", f"{base}/messages/{uid}/pieces/1/?dossier=INBOX", {}),
        ("post", f"{base}/actions/", {"dossier": "INBOX", "action": "supprimer", "uids": [uid]}),
        ("post", f"{base}/corbeille/vider/", {}),
    ]


@pytest.mark.parametrize(
    "persona", ["outsider", "other_director", "nurse_on_per", "secretary_on_org"]
)
def test_people_without_rights_get_404_everywhere_and_nothing_changes(
    world: World, persona: str
) -> None:
    deliver(world.per.address, make_message(subject="Résultat confidentiel"))
    deliver(world.org.address, make_message(subject="Transmission équipe", to=world.org.address))
    user, boxes = {
        "outsider": (world.outsider, [world.per, world.org]),
        "other_director": (world.other_director, [world.per, world.org]),
        "nurse_on_per": (world.nurse, [world.per]),
        "secretary_on_org": (world.secretary, [world.org]),
    }[persona]
    client = _client(user)

    for box in boxes:
        for method, url, data in _urls(box):
            response = getattr(client, method)(url, data)
            assert response.status_code == 404, (persona, url)
            assert "Résultat confidentiel" not in response.content.decode()

    assert (
        "Résultat confidentiel"
        in _client(world.doctor).get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    )
    assert not AuditEvent.objects.filter(action__startswith="message.", actor=user).exists()


def test_unknown_and_malformed_ids_are_404(world: World) -> None:
    client = _client(world.doctor)
    assert client.get("/bal/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert (
        client.get(f"/bal/{world.per.public_id}/messages/999999/?dossier=INBOX").status_code == 404
    )
    assert (
        client.get(f"/bal/{world.per.public_id}/messages/99999999999/?dossier=INBOX").status_code
        == 404
    )
    assert client.get(f"/bal/{world.per.public_id}/?dossier=NExistePas").status_code == 404


def test_a_closed_bal_disappears_for_everyone(world: World, keys, settings, tmp_path) -> None:
    from mailboxes.console.services.closing import mailbox_close
    from mailboxes.console.services.recovery_key import recovery_key_set

    settings.EXPORT_DIR = tmp_path / "exports"
    recovery_key_set(structure=world.per.structure, armored=keys.public, actor=None)
    mailbox_close(mailbox=world.per, actor=None)

    assert _client(world.doctor).get(f"/bal/{world.per.public_id}/").status_code == 404
    assert _client(world.secretary).get(f"/bal/{world.per.public_id}/").status_code == 404


def test_index_lists_each_usable_bal_with_its_unread_count(world: World) -> None:
    deliver(world.org.address, make_message(to=world.org.address))
    deliver(world.org.address, make_message(to=world.org.address))

    html = _client(world.nurse).get("/bal/").content.decode()

    assert world.org.address in html
    assert world.per.address not in html
    assert "2 non lus" in html


def test_switcher_fragment_has_every_bal_and_counts(world: World) -> None:
    deliver(world.per.address, make_message())

    html = (
        _client(world.doctor)
        .get("/bal/selecteur/", headers={"HX-Request": "true"})
        .content.decode()
    )

    assert world.per.address in html and world.org.address in html
    assert 'class="badge badge--count" title="non lus">1<' in html


def test_inbox_lists_newest_first_with_unread_state_and_traces_it(world: World) -> None:
    deliver(world.per.address, make_message(subject="Premier message"))
    deliver(
        world.per.address,
        make_message(subject="Second message", sender="Laboratoire <labo@bio.mssante.fr>"),
    )

    response = _client(world.doctor).get(f"/bal/{world.per.public_id}/?dossier=INBOX")

    html = response.content.decode()
    assert response.status_code == 200
    assert html.index("Second message") < html.index("Premier message")
    assert html.count('class="unread"') == 2
    assert "Laboratoire" in html
    assert "Boîte de réception" in html and "Corbeille" in html
    event = AuditEvent.objects.get(action="message.list")
    assert event.actor == world.doctor
    assert event.target_id == str(world.per.public_id)
    assert event.details == {"folder": "INBOX", "page": 1, "search": False}


def test_the_tab_title_names_the_folder_in_french_with_its_unread_count(world: World) -> None:
    for n in range(3):
        deliver(world.per.address, make_message(subject=f"Message {n}"))
    client = _client(world.doctor)

    inbox = client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    sent = client.get(f"/bal/{world.per.public_id}/?dossier=Sent").content.decode()

    title = re.search(r"<title>(.*?)</title>", inbox, re.S).group(1)  # type: ignore[union-attr]
    assert title.startswith(f"Boîte de réception (3) · {world.per.address}")
    assert "INBOX" not in title
    # A folder with nothing unread shows no count.
    sent_title = re.search(r"<title>(.*?)</title>", sent, re.S).group(1)  # type: ignore[union-attr]
    assert sent_title.startswith(f"Envoyés · {world.per.address}")


def test_new_mail_is_announced_to_an_open_folder_page_with_the_title_updated(
    world: World,
) -> None:
    deliver(world.per.address, make_message(subject="Déjà là"))
    client = _client(world.doctor)
    page = client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    poll = re.search(r'hx-get="([^"]*/nouveaux/[^"]*)"', page).group(1).replace("&amp;", "&")  # type: ignore[union-attr]

    assert client.get(poll).status_code == 204  # nothing new: htmx swaps nothing
    deliver(world.per.address, make_message(subject="Arrivé ensuite"))
    deliver(world.per.address, make_message(subject="Et encore un"))
    answer = client.get(poll, headers={"HX-Request": "true"})

    html = answer.content.decode()
    assert answer.status_code == 200
    assert "2 nouveaux messages" in html
    assert f"<title>Boîte de réception (3) · {world.per.address}" in html
    # Polling reads counts only: no message was marked read, nothing was traced.
    assert "Arrivé ensuite" not in html
    assert not AuditEvent.objects.filter(action="message.read").exists()
    inbox = client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    assert inbox.count('class="unread"') == 3


def test_polling_refuses_what_the_page_would_refuse(world: World) -> None:
    client = _client(world.doctor)
    base = f"/bal/{world.per.public_id}/nouveaux/"
    assert client.get(base + "?dossier=Inexistant&depuis=1").status_code == 404
    assert client.get(base + "?dossier=INBOX&depuis=abc").status_code == 400
    assert client.get(base + "?dossier=INBOX%0d%0aA1%20LOGOUT&depuis=1").status_code == 400
    # Another person's BAL does not exist for them.
    assert _client(world.outsider).get(base + "?dossier=INBOX&depuis=1").status_code == 404


def test_htmx_gets_only_the_list_fragment(world: World) -> None:
    deliver(world.per.address, make_message())
    html = (
        _client(world.doctor)
        .get(f"/bal/{world.per.public_id}/?dossier=INBOX", headers={"HX-Request": "true"})
        .content.decode()
    )
    assert html.lstrip().startswith('<div id="message-list">')
    assert "<html" not in html


def test_pagination_50_per_page(world: World) -> None:
    for i in range(53):
        deliver(world.per.address, make_message(subject=f"Message numéro {i:02d}"))
    client = _client(world.doctor)

    first = client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    second = client.get(f"/bal/{world.per.public_id}/?dossier=INBOX&page=2").content.decode()

    assert "Message numéro 52" in first and "Message numéro 02" not in first
    assert "Message numéro 02" in second and "Message numéro 03" not in second
    assert "Page 2 sur 2 · 53 messages" in second


def test_reading_a_message_shows_it_marks_it_read_and_traces_its_id(world: World) -> None:
    deliver(
        world.per.address, make_message(subject="Compte rendu", body="Tension 12/8, pas de fièvre.")
    )
    client = _client(world.doctor)

    response = client.get(f"/bal/{world.per.public_id}/messages/1/?dossier=INBOX")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Compte rendu" in html and "Tension 12/8, pas de fièvre." in html
    assert "paul.durand@chu-exemple.mssante.fr" in html
    listing = client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    assert 'class="unread"' not in listing
    read = AuditEvent.objects.get(action="message.read")
    assert read.details["uid"] == 1 and read.details["message_id"].endswith(
        "@chu-exemple.mssante.fr>"
    )
    assert "Tension" not in str(read.details) and "Compte rendu" not in str(read.details)


def test_org_member_reads_under_their_own_identity(world: World) -> None:
    deliver(world.org.address, make_message(to=world.org.address, subject="Relève de nuit"))

    html = (
        _client(world.nurse)
        .get(f"/bal/{world.org.public_id}/messages/1/?dossier=INBOX")
        .content.decode()
    )

    assert "Relève de nuit" in html
    assert AuditEvent.objects.get(action="message.read").actor == world.nurse


def test_delegate_reads_the_doctors_bal(world: World) -> None:
    deliver(world.per.address, make_message(subject="Rendez-vous à décaler"))
    html = (
        _client(world.secretary).get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    )
    assert "Rendez-vous à décaler" in html


def test_flag_unread_move_delete_and_empty_trash(world: World) -> None:
    for subject in ("Un", "Deux", "Trois"):
        deliver(world.per.address, make_message(subject=subject))
    client = _client(world.doctor)
    box = f"/bal/{world.per.public_id}"

    client.post(f"{box}/actions/", {"dossier": "INBOX", "action": "suivi", "uids": [1]})
    client.post(f"{box}/actions/", {"dossier": "INBOX", "action": "lu", "uids": [1, 2]})
    client.post(
        f"{box}/actions/",
        {"dossier": "INBOX", "action": "deplacer", "cible": "Drafts", "uids": [2]},
    )
    r = client.post(
        f"{box}/actions/", {"dossier": "INBOX", "action": "supprimer", "uids": [3]}, follow=True
    )

    assert "1 message placé dans la corbeille." in r.content.decode()
    inbox = client.get(f"{box}/?dossier=INBOX").content.decode()
    assert "Un" in inbox and "⚑" in inbox and "Deux" not in inbox and "Trois" not in inbox
    assert "Deux" in client.get(f"{box}/?dossier=Drafts").content.decode()
    trash = client.get(f"{box}/?dossier=Trash").content.decode()
    assert "Trois" in trash and "Vider la corbeille" in trash

    client.post(f"{box}/corbeille/vider/")

    assert "Ce dossier est vide." in client.get(f"{box}/?dossier=Trash").content.decode()
    actions = list(AuditEvent.objects.filter(actor=world.doctor).values_list("action", flat=True))
    for action in ("message.flag", "message.move", "message.delete", "mailbox.trash_emptied"):
        assert action in actions


def test_action_without_selection_says_so_and_changes_nothing(world: World) -> None:
    deliver(world.per.address, make_message(subject="Intact"))
    client = _client(world.doctor)

    r = client.post(
        f"/bal/{world.per.public_id}/actions/",
        {"dossier": "INBOX", "action": "supprimer"},
        follow=True,
    )

    assert "Sélectionnez au moins un message." in r.content.decode()
    assert "Intact" in client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()


def test_garbage_action_forms_are_refused_cleanly(world: World) -> None:
    client = _client(world.doctor)
    box = f"/bal/{world.per.public_id}/actions/"
    for data in (
        {"dossier": "INBOX", "action": "exploser", "uids": [1]},
        {"dossier": "INBOX", "action": "supprimer", "uids": ["abc"]},
        {"dossier": "INBOX", "action": "deplacer", "uids": [1]},
        {"dossier": "NExistePas", "action": "lu", "uids": [1]},
    ):
        r = client.post(box, data)
        assert r.status_code in (302, 404), data


def test_suspended_bal_is_read_only(world: World) -> None:
    from mailboxes.console.services.lifecycle import mailbox_suspend

    deliver(world.per.address, make_message(subject="Toujours lisible"))
    mailbox_suspend(mailbox=world.per, actor=None)
    client = _client(world.doctor)

    assert (
        "Toujours lisible"
        in client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    )
    r = client.post(
        f"/bal/{world.per.public_id}/actions/",
        {"dossier": "INBOX", "action": "supprimer", "uids": [1]},
    )

    assert r.status_code == 403
    assert "suspendue" in r.content.decode()
    assert (
        "Toujours lisible"
        in client.get(f"/bal/{world.per.public_id}/?dossier=INBOX").content.decode()
    )
    failure = AuditEvent.objects.get(action="message.delete")
    assert failure.result == "failure" and failure.error_code == "mailbox_suspended"


def test_search_by_sender_subject_body_and_dates(world: World) -> None:
    deliver(
        world.per.address,
        make_message(
            subject="Bilan sanguin",
            sender="Labo <labo@bio.mssante.fr>",
            date="Tue, 03 Nov 2026 08:00:00 +0100",
        ),
    )
    deliver(
        world.per.address,
        make_message(
            subject="Ordonnance", body="Amoxicilline 1 g", date="Tue, 17 Nov 2026 08:00:00 +0100"
        ),
    )
    client = _client(world.doctor)
    base = f"/bal/{world.per.public_id}/?dossier=INBOX"

    by_sender = client.get(f"{base}&de=labo@bio").content.decode()
    by_subject = client.get(f"{base}&objet=ordonnance").content.decode()
    by_body = client.get(f"{base}&texte=Amoxicilline").content.decode()
    nothing = client.get(f"{base}&objet=introuvable").content.decode()
    bad_dates = client.get(f"{base}&du=2026-11-20&au=2026-11-01")

    assert "Bilan sanguin" in by_sender and "Ordonnance" not in by_sender
    assert "Ordonnance" in by_subject and "Bilan sanguin" not in by_subject
    assert "Ordonnance" in by_body
    assert "Aucun message ne correspond à votre recherche." in nothing
    assert (
        bad_dates.status_code == 200
        and "La date de fin précède la date de début." in bad_dates.content.decode()
    )
    assert AuditEvent.objects.filter(action="message.list", details__search=True).count() == 4


def test_store_down_gives_a_french_503_not_a_500(world: World, settings, tmp_path) -> None:
    settings.DOVECOT_DIR = tmp_path  # no Dovecot socket there
    r = _client(world.doctor).get(f"/bal/{world.per.public_id}/?dossier=INBOX")

    assert r.status_code == 503
    assert "momentanément indisponible" in r.content.decode()
    assert AuditEvent.objects.get(action="message.list").error_code == "store_unavailable"
