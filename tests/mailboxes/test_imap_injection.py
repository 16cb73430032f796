"""No value a person types reaches Dovecot as a command (issue 15).

imapclient puts a search value inside an IMAP quoted string as it is: a CR/LF in it ends the
command line and Dovecot runs what follows as new commands, on the BAL of whoever asked, even a
read-only delegate. Every field of every webmail view is tried here with injected commands that
delete a folder, create one, plant a message and flag everything; the BAL must be exactly as it
was and nothing traced as done. The store refuses such values too, whoever calls it, and folder
names are compared with the BAL's real folders, never sent as a LIST pattern.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.test import Client
from imapclient import IMAPClient

from accounts.models import AuditEvent, User
from mailboxes.access import access_mailbox
from mailboxes.errors import ControlCharacters
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.store.headers import message_id_of
from mailboxes.store.imap import Criteria, MailStore, inboxes_holding
from mailboxes.webmail.forms import FolderQuery, MessageQuery, MessagesAction, ReceiptAnswer
from mailboxes.webmail.services import messages as svc
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db

PLANTED = "Subject: message pose par injection\r\n\r\npirate\r\n"
COMMANDS = (
    "Z1 DELETE Archives\r\n"
    "Z2 CREATE Pirate\r\n"
    f"Z3 APPEND INBOX {{{len(PLANTED)}+}}\r\n{PLANTED}\r\n"
    "Z4 UID STORE 1:* +FLAGS (\\Seen \\Flagged \\Deleted)\r\n"
    "Z5 EXPUNGE\r\n"
    "Z6 NOOP"
)
# CRLF and bare LF both end a command line for Dovecot; a quote first closes a quoted string.
PAYLOADS = {
    "crlf": f"x\r\n{COMMANDS}",
    "lf": "x\n" + COMMANDS.replace("\r\n", "\n"),
    "quote-crlf": f'x"\r\n{COMMANDS}',
}
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f"]


@dataclass
class Bal:
    owner: User
    reader: User  # a delegate who may read, not send
    box: Mailbox


@pytest.fixture
def bal(dovecot) -> Bal:
    owner = make_professional(first_name="Claire", last_name="Martin")
    reader = make_professional(first_name="Sophie", last_name="Petit", profession="")
    box = make_mailbox(structure=make_structure(), owner=owner, local_part="claire.martin")
    grant(box, reader)
    wait_provisioned(box.address)
    deliver(box.address, make_message(subject="Bilan sanguin"))
    deliver(
        box.address,
        make_message(
            subject="Demande d'accusé",
            extra_headers=f"Disposition-Notification-To: {box.address}\r\n",
        ),
    )
    with _imap(box.address) as imap:
        imap.create_folder("Archives")
        imap.append("Archives", make_message(subject="Archivé"), flags=[b"\\Seen"])
    return Bal(owner, reader, box)


def _imap(address: str) -> IMAPClient:
    imap = IMAPClient("127.0.0.1", port=settings.DOVECOT_IMAP_PORT, ssl=False)
    imap.login(f"{address}*{settings.DOVECOT_MASTER_USER}", settings.DOVECOT_MASTER_PASSWORD)
    return imap


def snapshot(address: str) -> dict[str, list[tuple[int, tuple[bytes, ...]]]]:
    """Every folder of the BAL with each message's UID and stored flags (\\Recent is left
    out: it belongs to sessions, not to the message, RFC 3501 §2.3.2)."""
    with _imap(address) as imap:
        state = {}
        for _flags, _delim, name in imap.list_folders():
            imap.select_folder(name, readonly=True)
            uids = imap.search(["ALL"])
            fetched = imap.fetch(uids, ["FLAGS"]) if uids else {}
            state[name] = sorted(
                (int(uid), tuple(sorted(f for f in data[b"FLAGS"] if f != b"\\Recent")))
                for uid, data in fetched.items()
            )
        return state


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def reading_requests(box: Mailbox, p: str) -> list[tuple[str, str, str, dict[str, object]]]:
    """(name, method, url, data) with ``p`` in one field each, every other field valid."""
    base = f"/bal/{box.public_id}"
    inbox = {"dossier": "INBOX"}
    one = {"dossier": "INBOX", "uids": [1]}
    receipt = f"{base}/messages/2/accuse/"  # message 2 asks for a read receipt
    return [
        ("liste: dossier", "get", f"{base}/", {"dossier": p}),
        ("liste: de", "get", f"{base}/", {**inbox, "de": p}),
        ("liste: objet", "get", f"{base}/", {**inbox, "objet": p}),
        ("liste: objet trié", "get", f"{base}/", {**inbox, "objet": p, "tri": "objet"}),
        ("liste: texte", "get", f"{base}/", {**inbox, "texte": p}),
        ("liste: tri", "get", f"{base}/", {**inbox, "tri": p}),
        ("liste: page", "get", f"{base}/", {**inbox, "page": p}),
        ("liste: du", "get", f"{base}/", {**inbox, "du": p}),
        ("liste: au", "get", f"{base}/", {**inbox, "au": p}),
        ("message: dossier", "get", f"{base}/messages/1/", {"dossier": p}),
        ("message: images", "get", f"{base}/messages/1/", {**inbox, "images": p}),
        ("contenu: dossier", "get", f"{base}/messages/1/contenu/", {"dossier": p}),
        ("pièce: dossier", "get", f"{base}/messages/1/pieces/1/", {"dossier": p}),
        ("actions: dossier", "post", f"{base}/actions/", {**one, "action": "lu", "dossier": p}),
        ("actions: action", "post", f"{base}/actions/", {**one, "action": p}),
        ("actions: cible", "post", f"{base}/actions/", {**one, "action": "deplacer", "cible": p}),
        ("actions: uids", "post", f"{base}/actions/", {**inbox, "action": "lu", "uids": [p]}),
        ("actions: suivant", "post", f"{base}/actions/", {**one, "action": "lu", "suivant": p}),
        ("accusé: dossier", "post", receipt, {"dossier": p, "reponse": "refuser"}),
        ("accusé: reponse", "post", receipt, {**inbox, "reponse": p}),
    ]


def writing_requests(box: Mailbox, p: str) -> list[tuple[str, str, str, dict[str, object]]]:
    """The compose page's fields that name a stored message (reply, forward, draft)."""
    url = f"/bal/{box.public_id}/ecrire/"
    send = {"de": str(box.public_id), "a": box.address, "objet": "Transfert", "corps": "Voir PJ"}
    return [
        ("répondre: dossier", "get", url, {"mode": "repondre", "uid": 1, "dossier": p}),
        ("transférer: dossier", "get", url, {"mode": "transferer", "uid": 1, "dossier": p}),
        ("répondre: mode", "get", url, {"mode": p, "uid": 1, "dossier": "INBOX"}),
        ("répondre: uid", "get", url, {"mode": "repondre", "uid": p, "dossier": "INBOX"}),
        ("brouillon", "get", url, {"brouillon": p}),
        ("envoyer: transfert", "post", url, {**send, "transfert": f"INBOX{p}:1"}),
        ("envoyer: transfert uid", "post", url, {**send, "transfert": f"INBOX:1{p}"}),
    ]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injected_commands_in_any_field_are_refused_and_change_nothing(
    bal: Bal, payload: str
) -> None:
    before = snapshot(bal.box.address)
    assert "Archives" in before and len(before["INBOX"]) == 2
    queued = OutboundMessage.objects.count()  # the holder's notice of the delegation
    done = []
    for user, requests in (
        (bal.reader, reading_requests(bal.box, PAYLOADS[payload])),
        (bal.owner, writing_requests(bal.box, PAYLOADS[payload])),
    ):
        client = _client(user)
        for name, method, url, data in requests:
            response = getattr(client, method)(url, data)
            if response.status_code != 400 or "caractère de contrôle" not in response.text:
                done.append((name, response.status_code))

    assert done == []
    assert snapshot(bal.box.address) == before
    assert not AuditEvent.objects.filter(action__startswith="message.", result="success").exists()
    assert OutboundMessage.objects.count() == queued


@pytest.mark.parametrize(
    ("form", "data"),
    [
        (FolderQuery, {"dossier": "INBOX", "objet": "a{c}b"}),
        (FolderQuery, {"dossier": "INBOX{c}"}),
        (FolderQuery, {"dossier": "INBOX", "tri": "date{c}"}),
        (MessageQuery, {"dossier": "{c}INBOX"}),
        (ReceiptAnswer, {"dossier": "INBOX", "reponse": "envoyer{c}"}),
        (MessagesAction, {"dossier": "INBOX", "action": "deplacer", "cible": "Sent{c}"}),
    ],
)
def test_every_control_character_and_del_is_refused_by_the_forms(
    form: type[FolderQuery], data: dict[str, str]
) -> None:
    for c in CONTROLS:
        bound = form({k: v.format(c=c) for k, v in data.items()})
        with pytest.raises(ControlCharacters) as refused:
            bound.refuse_control_characters()
        assert refused.value.http_status == 400, repr(c)
        assert "caractère de contrôle" in refused.value.user_message


def test_a_plain_search_is_not_refused() -> None:
    bound = FolderQuery({"dossier": "Sent", "objet": 'Ordonnance "urgente" \\ é', "tri": "date"})
    bound.refuse_control_characters()
    assert bound.is_valid() and bound.criteria().subject == 'Ordonnance "urgente" \\ é'


STORE_CALLS: dict[str, Callable[[MailStore, str], object]] = {
    "page (objet)": lambda s, p: s.page("INBOX", criteria=Criteria(subject=p)),
    "page trié (de)": lambda s, p: s.page("INBOX", criteria=Criteria(sender=p), order="date"),
    "page (texte)": lambda s, p: s.page("INBOX", criteria=Criteria(body=p)),
    "page (dossier)": lambda s, p: s.page(p),
    "fetch": lambda s, p: s.fetch(p, 1),
    "folder_exists": lambda s, p: s.folder_exists(p),
    "unread": lambda s, p: s.unread(p),
    "set_flag": lambda s, p: s.set_flag(p, [1], b"\\Seen", True),
    "move (cible)": lambda s, p: s.move("INBOX", [1], p),
    "delete": lambda s, p: s.delete(p, [1]),
    "search_header": lambda s, p: s.search_header("INBOX", "Message-ID", p),
    "append (dossier)": lambda s, p: s.append(p, b"Subject: x\r\n\r\ny\r\n"),
    "message_ids": lambda s, p: s.message_ids(p, [1]),
    "folder_uids": lambda s, p: s.folder_uids(p),
}


@pytest.mark.parametrize("call", STORE_CALLS)
def test_the_store_refuses_control_characters_whoever_calls_it(bal: Bal, call: str) -> None:
    before = snapshot(bal.box.address)
    with MailStore(bal.box.address) as store:
        for c in CONTROLS:
            with pytest.raises(ControlCharacters):
                STORE_CALLS[call](store, f"x{c}{COMMANDS}")
        # The session is still usable: nothing was sent.
        assert store.page("INBOX").total == 2

    assert snapshot(bal.box.address) == before


def test_a_service_call_with_an_injected_search_is_traced_as_refused(bal: Bal) -> None:
    grant = access_mailbox(bal.reader, bal.box.public_id)
    before = snapshot(bal.box.address)

    with pytest.raises(ControlCharacters):
        svc.folder_open(
            grant=grant,
            actor=bal.reader,
            folder="INBOX",
            criteria=Criteria(subject=PAYLOADS["crlf"]),
        )

    assert snapshot(bal.box.address) == before
    trace = AuditEvent.objects.get(action="message.list")
    assert (trace.result, trace.error_code) == ("failure", "control_characters")


def test_a_message_id_with_a_line_break_is_never_searched(bal: Bal) -> None:
    """The gateway and the relay ask which INBOX already holds a Message-ID a peer sent."""
    before = snapshot(bal.box.address)

    # A bare CR is not a line end for the header parser: the Message-ID carries the commands.
    smuggled = COMMANDS.replace("\r\n", "\r")
    content = f"Message-ID: <a@b>\r{smuggled}\r\nSubject: x\r\n\r\nCorps\r\n".encode()
    assert "\r" in message_id_of(content)

    assert inboxes_holding([bal.box.address], sender="x@b.fr", content=content) == set()

    assert snapshot(bal.box.address) == before


def test_search_values_travel_as_literals(bal: Bal, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 3501 §4.3: a literal is counted, so nothing in it can end the command."""
    deliver(bal.box.address, make_message(subject='Ordonnance "urgente" \\ à renouveler'))
    client = _client(bal.owner)
    url = f"/bal/{bal.box.public_id}/"

    with caplog.at_level(logging.DEBUG, logger="imapclient"):
        found = client.get(url, {"dossier": "INBOX", "objet": '"urgente" \\ à'})
        by_sender = client.get(url, {"dossier": "INBOX", "de": "durand", "tri": "expediteur"})

    assert "Ordonnance &quot;urgente&quot; \\ à renouveler" in found.text
    assert "Bilan sanguin" not in found.text
    assert "Bilan sanguin" in by_sender.text
    # imapclient logs each line it writes (« > »), a literal apart: « SUBJECT » then « {n+} ».
    sent = "\n".join(m for r in caplog.records if (m := r.getMessage()).startswith("> "))
    assert re.search(r"UID SEARCH CHARSET UTF-8 SUBJECT'\n> b' \{\d+\+\}", sent), sent
    assert re.search(r"UID SORT \(FROM\) UTF-8 FROM'\n> b' \{6\+\}\\r\\ndurand'", sent), sent
    literals = [line for line in sent.splitlines() if line.startswith("> b' {")]
    assert any("urgente" in line for line in literals)
    assert "urgente" not in "".join(set(sent.splitlines()) - set(literals))


@pytest.mark.parametrize("pattern", ["*", "%", "INB%", "Arch*", "*/*"])
def test_a_folder_is_one_of_the_bals_folders_never_a_list_pattern(bal: Bal, pattern: str) -> None:
    client = _client(bal.reader)
    base = f"/bal/{bal.box.public_id}"

    listing = client.get(f"{base}/", {"dossier": pattern})
    page = client.get(f"{base}/messages/1/", {"dossier": pattern})
    body = client.get(f"{base}/messages/1/contenu/", {"dossier": pattern})
    # Moving needs the organise right: the holder's own session asks.
    move = _client(bal.owner).post(
        f"{base}/actions/",
        {"dossier": "INBOX", "action": "deplacer", "cible": pattern, "uids": [1]},
    )

    assert (listing.status_code, page.status_code, body.status_code) == (404, 404, 404)
    assert "Ce dossier n&#x27;existe pas dans cette boîte aux lettres." in listing.text
    assert move.status_code == 404
    assert len(snapshot(bal.box.address)["INBOX"]) == 2


def test_real_folders_still_open_inbox_in_any_case(bal: Bal) -> None:
    """RFC 3501 §5.1: INBOX is case-insensitive; other names are compared as they are."""
    client = _client(bal.reader)
    base = f"/bal/{bal.box.public_id}/"

    assert "Archivé" in client.get(base, {"dossier": "Archives"}).text
    assert "Bilan sanguin" in client.get(base, {"dossier": "inbox"}).text
    assert client.get(base, {"dossier": "archives"}).status_code == 404
