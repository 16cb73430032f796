"""Four rights on a BAL, enforced by the services (issue 16): read (lists, messages,
attachments), organise (flags, move, put in the Trash), send, manage (empty the Trash, delete
for good, the BAL's delegations).

One test walks every webmail action against every right, with forged POSTs (the page never
offered them): what the right allows happens, anything else answers 403 with a French message
naming the missing right and leaves the store, the spool and the rights as they were; someone
without any right gets 404. Each person also sees only the buttons they may use. Real Dovecot,
personas from tests/personas.py, rights granted through ``access_set``.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from imapclient import IMAPClient

from accounts.models import AuditEvent, User
from mailboxes.access import MISSING, Access
from mailboxes.models import Absence, Mailbox, MailboxAccess, OutboundMessage
from mailboxes.store.imap import TRASH, MailStore
from mailboxes.store.mime import parse_message
from tests.factories import grant, make_mailbox, make_membership, make_message, make_professional
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.personas import Cast, client_for, make_cast

pytestmark = pytest.mark.django_db

EVERYTHING = {Access.READ, Access.ORGANISE, Access.SEND, Access.MANAGE}
# persona -> (the BAL it acts on, the rights it holds there; None: no right at all)
PERSONAS: dict[str, tuple[str, set[Access] | None]] = {
    "étranger": ("soins", None),
    "membre en lecture": ("soins", {Access.READ}),
    "membre qui classe": ("soins", {Access.READ, Access.ORGANISE}),
    "membre qui envoie": ("soins", {Access.READ, Access.SEND}),
    "membre qui gère": ("soins", {Access.READ, Access.ORGANISE, Access.MANAGE}),
    "infirmier (classe et envoie)": ("soins", {Access.READ, Access.ORGANISE, Access.SEND}),
    "secrétaire déléguée en lecture": ("per", {Access.READ}),
    "titulaire": ("per", EVERYTHING),
}


def _attachment_message(to: str) -> bytes:
    return (
        f"From: labo@chu-exemple.mssante.fr\r\nTo: {to}\r\nSubject: Compte rendu A\r\n"
        "Message-ID: <a.rights@chu-exemple.mssante.fr>\r\nMIME-Version: 1.0\r\n"
        "Disposition-Notification-To: labo@chu-exemple.mssante.fr\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Bilan biologique</p>\r\n--b\r\n"
        'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="cr.pdf"'
        "\r\n\r\n%PDF-1.4\r\n--b--\r\n"
    ).encode()


def folder_state(address: str, folder: str) -> dict[str, tuple[int, set[bytes]]]:
    """Subject -> (UID, flags) of every message of ``folder``, read without changing it."""
    with IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False) as imap:
        imap.login(f"{address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD)
        imap.select_folder(folder, readonly=True)
        uids = imap.search(["ALL"])
        data = imap.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
    state = {}
    for uid, item in data.items():
        header = item[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip()
        state[header.removeprefix("Subject: ")] = (uid, set(item[b"FLAGS"]))
    return state


@dataclass
class Scene:
    cast: Cast
    box: Mailbox  # the BAL the persona acts on
    other: Mailbox  # the other BAL of the cast (a local recipient)
    user: User
    rights: set[Access] | None
    colleague: User  # someone the persona could give rights to
    revocable: MailboxAccess  # someone's right the persona could take back
    attachment_index: int


def _scene(persona: str) -> Scene:
    cast = make_cast()
    which, rights = PERSONAS[persona]
    box, other = (cast.soins, cast.per) if which == "soins" else (cast.per, cast.soins)
    if persona == "étranger":
        user = cast.outsider
    elif persona == "titulaire":
        user = cast.doctor
    elif persona.startswith("secrétaire"):
        user = cast.secretary
    elif persona.startswith("infirmier"):
        user = cast.nurse
    else:
        assert rights is not None
        user = make_professional(first_name="Agnès", last_name="Membre", profession="60")
        grant(
            box, user, can_organise=Access.ORGANISE in rights, can_send=Access.SEND in rights,
            can_manage=Access.MANAGE in rights,
        )  # fmt: skip
    colleague = make_professional(first_name="Hugo", last_name="Collègue")
    make_membership(colleague, box.structure)
    revocable = grant(box, make_professional(first_name="Léa", last_name="Autre"))
    wait_provisioned(box.address, other.address)
    raw = _attachment_message(box.address)
    deliver(box.address, raw)
    for subject in ("Compte rendu B", "Compte rendu C"):
        deliver(box.address, make_message(subject=subject, to=box.address))
    with MailStore(box.address) as store:
        for subject in ("Ancien D", "Ancien E"):
            store.append(TRASH, make_message(subject=subject, to=box.address), flags=())
        for name in ("Classement", "Vide"):
            store.folder_create(name)
    index = parse_message(raw).attachments[0].index
    return Scene(cast, box, other, user, rights, colleague, revocable, index)


@dataclass
class Action:
    name: str
    need: Access
    do: Callable[[Client, Scene], Any]
    done: Callable[[Scene], bool]  # whether the action took place
    changes: bool = True  # False: a page that only shows (its effect is its status)


def _act(client: Client, s: Scene, **data: Any) -> Any:
    return client.post(f"/bal/{s.box.public_id}/actions/", data)


def _folder_names(s: Scene) -> list[str]:
    with MailStore(s.box.address) as store:
        return store.folder_names()


def _uid(s: Scene, folder: str, subject: str) -> int:
    found = folder_state(s.box.address, folder).get(subject)
    return found[0] if found else 999


ACTIONS = [
    Action(
        "lister",
        Access.READ,
        lambda c, s: c.get(f"/bal/{s.box.public_id}/", {"dossier": "INBOX"}),
        lambda s: True,
        changes=False,
    ),
    Action(
        "lire",
        Access.READ,
        lambda c, s: c.get(
            f"/bal/{s.box.public_id}/messages/{_uid(s, 'INBOX', 'Compte rendu B')}/",
            {"dossier": "INBOX"},
        ),
        lambda s: True,
        changes=False,
    ),
    Action(
        "afficher le contenu",
        Access.READ,
        lambda c, s: c.get(
            f"/bal/{s.box.public_id}/messages/{_uid(s, 'INBOX', 'Compte rendu A')}/contenu/",
            {"dossier": "INBOX"},
        ),
        lambda s: True,
        changes=False,
    ),
    Action(
        "télécharger la pièce jointe",
        Access.READ,
        lambda c, s: c.get(
            f"/bal/{s.box.public_id}/messages/{_uid(s, 'INBOX', 'Compte rendu A')}/pieces/"
            f"{s.attachment_index}/",
            {"dossier": "INBOX"},
        ),
        lambda s: True,
        changes=False,
    ),
    Action(
        "imprimer",
        Access.READ,
        lambda c, s: c.get(
            f"/bal/{s.box.public_id}/messages/{_uid(s, 'INBOX', 'Compte rendu B')}/imprimer/",
            {"dossier": "INBOX"},
        ),
        lambda s: True,
        changes=False,
    ),
    Action(
        "aperçu de la pièce jointe",
        Access.READ,
        lambda c, s: c.get(
            f"/bal/{s.box.public_id}/messages/{_uid(s, 'INBOX', 'Compte rendu A')}/pieces/"
            f"{s.attachment_index}/apercu/fichier/",
            {"dossier": "INBOX"},
        ),
        lambda s: True,
        changes=False,
    ),
    Action(
        "créer un dossier",
        Access.ORGANISE,
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/dossiers/", {"action": "creer", "nom": "Neuf"}
        ),
        lambda s: "Neuf" in _folder_names(s),
    ),
    Action(
        "renommer un dossier",
        Access.ORGANISE,
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/dossiers/",
            {"action": "renommer", "dossier": "Classement", "nom": "Classé"},
        ),
        lambda s: "Classé" in _folder_names(s),
    ),
    Action(
        "supprimer un dossier vide",
        Access.ORGANISE,
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/dossiers/", {"action": "supprimer", "dossier": "Vide"}
        ),
        lambda s: "Vide" not in _folder_names(s),
    ),
    Action(
        "marquer pour suivi",
        Access.ORGANISE,
        lambda c, s: _act(
            c, s, dossier="INBOX", action="suivi", uids=[_uid(s, "INBOX", "Compte rendu B")]
        ),
        lambda s: b"\\Flagged" in folder_state(s.box.address, "INBOX")["Compte rendu B"][1],
    ),
    Action(
        "marquer comme lu",
        Access.ORGANISE,
        lambda c, s: _act(
            c, s, dossier="INBOX", action="lu", uids=[_uid(s, "INBOX", "Compte rendu C")]
        ),
        lambda s: b"\\Seen" in folder_state(s.box.address, "INBOX")["Compte rendu C"][1],
    ),
    Action(
        "déplacer",
        Access.ORGANISE,
        lambda c, s: _act(
            c,
            s,
            dossier="INBOX",
            action="deplacer",
            cible="Sent",
            uids=[_uid(s, "INBOX", "Compte rendu C")],
        ),
        lambda s: "Compte rendu C" in folder_state(s.box.address, "Sent"),
    ),
    Action(
        "mettre à la corbeille",
        Access.ORGANISE,
        lambda c, s: _act(
            c, s, dossier="INBOX", action="supprimer", uids=[_uid(s, "INBOX", "Compte rendu B")]
        ),
        lambda s: "Compte rendu B" in folder_state(s.box.address, TRASH),
    ),
    Action(
        "supprimer définitivement",
        Access.MANAGE,
        lambda c, s: _act(
            c, s, dossier=TRASH, action="supprimer", uids=[_uid(s, TRASH, "Ancien D")]
        ),
        lambda s: "Ancien D" not in folder_state(s.box.address, TRASH),
    ),
    Action(
        "demander à vider la corbeille",
        Access.MANAGE,
        lambda c, s: c.get(f"/bal/{s.box.public_id}/corbeille/vider/"),
        lambda s: True,
        changes=False,
    ),
    Action(
        "vider la corbeille",
        Access.MANAGE,
        lambda c, s: c.post(f"/bal/{s.box.public_id}/corbeille/vider/"),
        lambda s: not folder_state(s.box.address, TRASH),
    ),
    Action(
        "envoyer",
        Access.SEND,
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/ecrire/",
            {
                "de": str(s.box.public_id),
                "a": s.other.address,
                "objet": "Transmission",
                "corps": "Bonjour",
                "action": "envoyer",
            },
        ),
        lambda s: OutboundMessage.objects.filter(
            mailbox=s.box, origin=OutboundMessage.Origin.WEBMAIL
        ).exists(),
    ),
    Action(
        "enregistrer un brouillon",
        Access.SEND,
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/ecrire/",
            {
                "de": str(s.box.public_id),
                "a": s.other.address,
                "objet": "Brouillon",
                "brouillon": "0" * 32,
                "action": "brouillon",
            },
        ),
        lambda s: "Brouillon" in folder_state(s.box.address, "Drafts"),
    ),
    Action(
        "répondre à l'accusé de lecture",
        Access.SEND,
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/messages/{_uid(s, 'INBOX', 'Compte rendu A')}/accuse/",
            {"dossier": "INBOX", "reponse": "refuser"},
        ),
        lambda s: b"$MDNSent" in folder_state(s.box.address, "INBOX")["Compte rendu A"][1],
    ),
    Action(
        "voir les délégations",
        Access.MANAGE,
        lambda c, s: c.get(f"/bal/{s.box.public_id}/delegations/"),
        lambda s: True,
        changes=False,
    ),
    Action(
        "déléguer",
        Access.MANAGE,
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/delegations/accorder/",
            {"person": str(s.colleague.public_id), "rights": "read"},
        ),
        lambda s: MailboxAccess.objects.filter(mailbox=s.box, user=s.colleague).exists(),
    ),
    Action(
        "retirer une délégation",
        Access.MANAGE,
        lambda c, s: c.post(f"/bal/{s.box.public_id}/delegations/{s.revocable.public_id}/retirer/"),
        lambda s: not MailboxAccess.objects.filter(pk=s.revocable.pk).exists(),
    ),
    Action(
        "régler le message d'absence",
        Access.SEND,  # the reply speaks in the BAL's name, as a message one would send
        lambda c, s: c.post(
            f"/bal/{s.box.public_id}/absence/",
            {"debut": _today(), "fin": _today(), "texte": "En congé."},
        ),
        lambda s: Absence.objects.filter(mailbox=s.box).exists(),
    ),
]


def _today() -> str:
    return timezone.localdate().isoformat()


def _page(response: Any) -> str:
    return html.unescape(response.content.decode(errors="replace"))


def _buttons_match_rights(client: Client, s: Scene, rights: set[Access]) -> None:
    """The pages offer exactly what the rights allow."""
    base = f"/bal/{s.box.public_id}"
    inbox = _page(client.get(f"{base}/", {"dossier": "INBOX"}))
    trash = _page(client.get(f"{base}/", {"dossier": TRASH}))
    uid = _uid(s, "INBOX", "Compte rendu A")
    message = _page(client.get(f"{base}/messages/{uid}/", {"dossier": "INBOX"}))
    in_trash = _uid(s, TRASH, "Ancien D")
    trashed = _page(client.get(f"{base}/messages/{in_trash}/", {"dossier": TRASH}))
    organise, send, manage = (
        need in rights for need in (Access.ORGANISE, Access.SEND, Access.MANAGE)
    )
    seen = {
        "sélection de messages": 'name="uids"' in inbox,
        "marquer pour suivi": "Marquer pour suivi" in inbox + message,
        "déplacer": "Déplacer vers" in inbox,
        "mettre à la corbeille": "Mettre à la corbeille" in inbox + message,
        "supprimer définitivement": "Supprimer définitivement" in trash + trashed,
        "vider la corbeille": "Vider la corbeille" in trash,
        "écrire": f'href="{base}/ecrire/"' in inbox,
        "répondre": "Répondre" in message,
        "accusé de lecture": "Envoyer l'accusé de lecture" in message,
        "délégations": f'href="{base}/delegations/"' in inbox,
        "gérer les dossiers": "Gérer les dossiers" in inbox,
        "message d'absence": f'href="{base}/absence/"' in inbox,
        "déplacer le message": "Déplacer vers" in message,
    }
    expected = {
        "sélection de messages": organise,
        "marquer pour suivi": organise,
        "déplacer": organise,
        "mettre à la corbeille": organise,
        "supprimer définitivement": manage,
        "vider la corbeille": manage,
        "écrire": send,
        "répondre": send,
        "accusé de lecture": send,
        "délégations": manage,
        "gérer les dossiers": organise,
        "message d'absence": send,
        "déplacer le message": organise,
    }
    assert seen == expected


@pytest.mark.parametrize("persona", list(PERSONAS))
def test_every_action_against_every_right(dovecot, persona: str) -> None:
    s = _scene(persona)
    client = client_for(s.user)  # a recent sign-in: delegating asks for one
    if s.rights is not None:
        _buttons_match_rights(client, s, s.rights)
        # Opening a message marks it read only for who may organise the BAL.
        client.get(f"/bal/{s.box.public_id}/messages/{_uid(s, 'INBOX', 'Compte rendu B')}/",
                   {"dossier": "INBOX"})  # fmt: skip
        seen = b"\\Seen" in folder_state(s.box.address, "INBOX")["Compte rendu B"][1]
        assert seen == (Access.ORGANISE in s.rights)
    refused = 0
    for action in ACTIONS:
        response = action.do(client, s)
        body = _page(response)
        if s.rights is None:
            assert response.status_code == 404, action.name
            assert "Compte rendu" not in body
            assert not (action.changes and action.done(s)), action.name
        elif action.need in s.rights:
            assert response.status_code in (200, 302), (action.name, response.status_code)
            assert action.done(s), action.name
        else:
            assert response.status_code == 403, (action.name, response.status_code)
            assert MISSING[action.need] in body, action.name
            assert not (action.changes and action.done(s)), action.name
            refused += 1
    if s.rights is not None:
        assert refused == sum(1 for a in ACTIONS if a.need not in s.rights)
        # The refused store actions are in the journal as failures, naming who tried.
        store_refusals = [a for a in ACTIONS if a.need not in s.rights and a.name in _STORE_ACTIONS]
        assert AuditEvent.objects.filter(
            actor=s.user, result="failure", error_code="right_missing"
        ).count() == len(store_refusals)


_STORE_ACTIONS = {
    "marquer pour suivi", "marquer comme lu", "déplacer", "mettre à la corbeille",
    "supprimer définitivement", "vider la corbeille", "créer un dossier", "renommer un dossier",
    "supprimer un dossier vide",
}  # fmt: skip


def test_a_read_only_delegate_cannot_write_from_the_bal_even_with_a_bal_of_her_own(
    dovecot,
) -> None:
    """The compose page of her own BAL, posted with the doctor's BAL as sender: 403, nothing
    is sent."""
    cast = make_cast()
    hers = make_mailbox(structure=cast.structure, owner=cast.secretary, local_part="sophie.petit")
    wait_provisioned(hers.address, cast.per.address)
    response = client_for(cast.secretary).post(
        f"/bal/{hers.public_id}/ecrire/",
        {"de": str(cast.per.public_id), "a": cast.soins.address, "objet": "Faux",
         "action": "envoyer"},
    )  # fmt: skip
    assert response.status_code == 403
    assert MISSING[Access.SEND] in _page(response)
    assert not OutboundMessage.objects.filter(origin=OutboundMessage.Origin.WEBMAIL).exists()
