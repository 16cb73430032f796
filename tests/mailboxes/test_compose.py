"""Writing from the webmail: recipients checked per address, patients by INS, the message as
Référentiel #2 wants it, the spool, the Sent copy, the trace; bad input refused cleanly."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from typing import TYPE_CHECKING

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, User
from annuaire.ins import InvalidINS, parse_ins
from annuaire.models import WhitelistEntry, WhitelistVersion
from mailboxes.models import Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.store.headers import HeaderRefused, header_set
from mailboxes.store.imap import MailStore
from mailboxes.transport.relay import message_relay
from mailboxes.webmail.services.compose import Draft, message_build
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned

pytestmark = pytest.mark.django_db(transaction=True)
REMOTE = "dr.durand@operateur-test.mssante.fr"
PATIENT_INS = "279035121518989"  # valid key (annuaire-psc-ins.md §C)


# --- INS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "summary"),
    [
        ("279035121518989", "Une femme, née en mars 1979, née dans le département 51"),
        ("146026322000196", "Un homme, né en février 1946, né dans le département 63"),
        ("253072B07300470", "Une femme, née en juillet 1953, née dans le département 2B"),
        ("2 53 07 2A 073 004 43", "Une femme, née en juillet 1953, née dans le département 2A"),
        ("295109912611193", "Une femme, née en octobre 1995, née à l'étranger (pays 126)"),
    ],
)
def test_valid_ins_and_the_summary_the_sender_confirms(value: str, summary: str) -> None:
    assert parse_ins(value).summary() == summary


@pytest.mark.parametrize(
    "value", ["288091234567823", "279035121518988", "253072B07300443", "27903512151898", "abc"]
)
def test_an_ins_with_a_wrong_key_or_length_is_refused(value: str) -> None:
    with pytest.raises(InvalidINS):
        parse_ins(value)


# --- The webmail ---------------------------------------------------------------------------------


@pytest.fixture
def doctor(dovecot, listed) -> tuple[User, Mailbox]:
    version = WhitelistVersion.objects.get(is_current=True)
    WhitelistEntry.objects.create(
        version=version, domain="patient.mssante.fr", dn="CN=smtps1.ens", dn_key="cn=smtps1.ens"
    )
    user = make_professional(first_name="Claire", last_name="Martin")
    user.civility = "DR"
    user.save()
    box = make_mailbox(structure=make_structure(), owner=user, local_part="claire.martin")
    wait_provisioned(box.address)
    return user, box


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _post(user: User, box: Mailbox, **data: object) -> _MonkeyPatchedWSGIResponse:
    payload: dict[str, object] = {
        "de": str(box.public_id),
        "objet": "Compte rendu",
        "corps": "Bonjour",
    }
    payload.update(data)
    return _client(user).post(f"/bal/{box.public_id}/ecrire/", payload)


def _sent(box: Mailbox) -> list[EmailMessage]:
    with MailStore(box.address) as store:
        store.client.select_folder("Sent", readonly=True)
        uids = store.client.search(["ALL"])
        fetched = store.client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    parsed = [
        email.message_from_bytes(d[b"BODY[]"], policy=email.policy.default)
        for d in fetched.values()
    ]
    return [m for m in parsed if isinstance(m, EmailMessage)]


def test_a_doctor_sends_to_a_listed_operator(doctor) -> None:
    user, box = doctor
    response = _post(user, box, a=f"Dr Durand <{REMOTE}>", accuse_remise="on", accuse_lecture="on")
    assert response.status_code == 302 and "dossier=Sent" in response["Location"]

    spooled = OutboundMessage.objects.get(mailbox=box)
    assert spooled.author == user and spooled.envelope_from == box.address
    [row] = OutboundDelivery.objects.filter(message=spooled)
    assert (row.recipient, row.notify, row.local) == (REMOTE, "SUCCESS,FAILURE", False)
    [copy] = _sent(box)
    [sender] = copy["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        f"Dr_Claire_MARTIN_{box.structure.name}",
        box.address,
    )
    assert copy["X-MSS-NIL"] and copy["Disposition-Notification-To"] == box.address
    assert copy["Message-ID"].strip() == spooled.message_id and "Sender" not in copy
    assert copy.get_content_type() == "text/plain" and copy.get_content_charset() == "utf-8"
    trace = AuditEvent.objects.get(action="message.sent")
    assert trace.actor == user and trace.details["recipients"] == 1
    assert "Compte rendu" not in str(trace.details)  # never content


def test_each_refused_address_says_why_and_nothing_is_sent(doctor) -> None:
    user, box = doctor
    response = _post(user, box, a=f"{REMOTE}, jean.dupont@gmail.com; pas-une-adresse")
    assert response.status_code == 400
    page = response.content.decode()
    assert "gmail.com est hors espace de confiance MSSanté" in page
    assert "pas-une-adresse</strong> : Adresse mal formée." in page
    assert not OutboundMessage.objects.exists() and _sent(box) == []


def test_a_patient_is_written_to_only_after_the_sender_confirms_who_it_is(doctor) -> None:
    user, box = doctor
    first = _post(user, box, ins=PATIENT_INS, bloquer_reponse="on")
    assert first.status_code == 400
    assert "Une femme, née en mars 1979, née dans le département 51" in first.content.decode()
    assert not OutboundMessage.objects.exists()

    second = _post(user, box, ins=PATIENT_INS, bloquer_reponse="on", confirmation_patient="on")
    assert second.status_code == 302
    [row] = OutboundDelivery.objects.all()
    assert row.recipient == f"{PATIENT_INS}@patient.mssante.fr"
    [copy] = _sent(box)
    assert copy["X-MSS-MES"] == "FIN"


def test_block_reply_is_ignored_without_a_patient(doctor) -> None:
    user, box = doctor
    assert _post(user, box, a=REMOTE, bloquer_reponse="on").status_code == 302
    assert "X-MSS-MES" not in _sent(box)[0]


def test_header_injection_and_mass_mailing_are_refused(doctor) -> None:
    user, box = doctor
    injected = _post(user, box, a=REMOTE, objet="Bonjour\r\nBcc: espion@gmail.com")
    assert injected.status_code == 400 and "saut de ligne" in injected.content.decode()
    many = ", ".join(f"p{n}@operateur-test.mssante.fr" for n in range(500))
    response = _post(user, box, a=many)
    assert response.status_code == 400
    assert "500 destinataires : 100 au plus" in response.content.decode()
    assert not OutboundMessage.objects.exists()


def test_hostile_attachment_names_are_sanitised_and_empty_files_refused(doctor) -> None:
    user, box = doctor
    empty = _post(user, box, a=REMOTE, pieces=SimpleUploadedFile("vide.pdf", b""))
    assert empty.status_code == 400 and "vide" in empty.content.decode()
    hostile = SimpleUploadedFile("../../etc/pass\x01wd<script>.pdf", b"%PDF-1.4 test")
    assert _post(user, box, a=REMOTE, pieces=hostile).status_code == 302
    [copy] = _sent(box)
    [part] = list(copy.iter_attachments())
    assert part.get_filename() == "passwd_script_.pdf"  # no path, no markup, no control
    assert part.get_content_type() == "application/pdf"


def test_a_reply_quotes_the_original_and_threads_with_it(doctor) -> None:
    user, box = doctor
    deliver(
        box.address,
        make_message(to=box.address, subject="Demande d'avis", sender=f"Dr Durand <{REMOTE}>"),
    )
    page = _client(user).get(f"/bal/{box.public_id}/ecrire/?mode=repondre&uid=1&dossier=INBOX")
    text = page.content.decode()
    assert page.status_code == 200
    assert 'value="RE : Demande d&#x27;avis"' in text and f'value="{REMOTE}"' in text
    assert 'name="en_reponse_a" value="&lt;' in text


def test_a_bal_local_to_us_is_delivered_and_its_status_shown_on_the_sent_copy(doctor) -> None:
    user, box = doctor
    colleague = make_mailbox(
        structure=box.structure, owner=make_professional(), local_part="paul.roux"
    )
    wait_provisioned(colleague.address)
    assert _post(user, box, a=colleague.address).status_code == 302
    message_relay(public_id=str(OutboundMessage.objects.get().public_id))
    assert OutboundDelivery.objects.get().status == OutboundDelivery.Status.DELIVERED
    page = _client(user).get(f"/bal/{box.public_id}/messages/1/?dossier=Sent").content.decode()
    assert "Suivi des destinataires" in page and colleague.address in page and "Remis" in page


def test_no_send_right_is_403_and_someone_elses_bal_is_404(doctor) -> None:
    user, box = doctor
    org = make_mailbox(structure=box.structure, kind="ORG", local_part="accueil", responsible=user)
    reader = make_professional(first_name="Julien", last_name="Bernard")
    grant(org, reader, can_send=False)
    assert _client(reader).get(f"/bal/{org.public_id}/ecrire/").status_code == 403
    outsider = make_professional(first_name="Inconnu", last_name="Dehors")
    assert _client(outsider).get(f"/bal/{box.public_id}/ecrire/").status_code == 404
    assert _client(outsider).post(f"/bal/{box.public_id}/ecrire/", {"a": REMOTE}).status_code == 404


def test_a_member_sending_from_an_org_bal_is_named_in_sender(doctor) -> None:
    user, box = doctor
    org = make_mailbox(
        structure=box.structure,
        kind="ORG",
        local_part="soins",
        responsible=user,
        display_name="Équipe soins",
    )
    grant(org, user, can_send=True)
    wait_provisioned(org.address)
    assert _post(user, org, a=REMOTE).status_code == 302
    [copy] = _sent(org)
    assert str(copy["From"]) == f"Équipe soins <{org.address}>"
    # The author by name and structure (ECO.2.2.7 label), at their own BAL.
    assert str(copy["Sender"]) == f"Dr_Claire_MARTIN_EHPAD Les Tilleuls <{box.address}>"


def test_the_recipient_check_fragment_shows_verdicts_and_the_patient_summary(doctor) -> None:
    user, _box = doctor
    response = _client(user).get(
        "/bal/destinataires/verifier/",
        {"a": "x@gmail.com", "ins": PATIENT_INS},
        HTTP_HX_REQUEST="true",
    )
    page = response.content.decode()
    assert "hors espace de confiance" in page
    assert "Une femme, née en mars 1979" in page and 'name="confirmation_patient"' in page


# --- Encoded words that decode to line breaks (RFC 2047) ---------------------------------------


def _ew(text: str, encoding: str = "b", charset: str = "utf-8") -> str:
    """``text`` as one RFC 2047 encoded word."""
    if encoding == "b":
        return f"=?{charset}?b?{base64.b64encode(text.encode(charset)).decode()}?="
    quoted = "".join(
        c if c.isalnum() or c in "@.:" else "_" if c == " " else f"={b:02X}"
        for c in text
        for b in c.encode(charset)
    )
    return f"=?{charset}?q?{quoted}?="


# Each decodes (once, or after a second decoding for the nested one) to text with a line break
# followed by a header of its own; some CPython 3.11 releases write that text out raw.
INJECTIONS = {
    "q-crlf": "=?utf-8?q?a=0D=0ABcc:_x@evil.example?=",
    "q-lf": "=?UTF-8?Q?a=0ABcc:_x@evil.example?=",
    "q-cr": "=?iso-8859-1?q?a=0DBcc:_x@evil.example?=",
    "b64": _ew("a\r\nBcc: x@evil.example"),
    "blank-line": "Bonjour " + _ew("\r\n\r\nBcc: x@evil.example", "q"),
    "nested": _ew(_ew("a\r\nBcc: x@evil.example", "q")),
    "u2028": _ew("a\u2028Bcc: x@evil.example"),
    "nul-vt": _ew("a\x00\x0bBcc: x@evil.example"),
}
EXPECTED = {"from", "to", "subject", "date", "message-id", "x-mss-nil", "mime-version"}


def _header_names(raw: bytes) -> list[str]:
    """The header names of ``raw`` as a receiving MTA reads them (up to the first blank line)."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    parsed = email.message_from_bytes(head + b"\n\n", policy=email.policy.default)
    return [name.lower() for name in parsed]


def _one_of_each(raw: bytes) -> None:
    names = _header_names(raw)
    assert "bcc" not in names, names
    assert names.count("subject") == 1 and names.count("from") == 1, names
    assert set(names) >= EXPECTED, names  # no blank line ended the headers early


CASES = [("subject", key) for key in INJECTIONS] + [
    (where, key)
    for where in ("holder", "structure", "org", "sender")
    for key in ("q-crlf", "b64", "blank-line", "nested", "u2028")
]


@pytest.mark.parametrize(("where", "key"), CASES, ids=[f"{w}-{k}" for w, k in CASES])
def test_encoded_words_decoding_to_line_breaks_never_add_a_header(
    dovecot, where: str, key: str
) -> None:
    value = INJECTIONS[key]
    user = make_professional(
        first_name=value if where == "sender" else "Claire",
        last_name=value if where == "holder" else "Martin",
    )
    structure = make_structure(name=value if where == "structure" else "EHPAD Les Tilleuls")
    box = make_mailbox(structure=structure, owner=user)
    if where in ("org", "sender"):  # a member writing from an ORG BAL is named in Sender
        box = make_mailbox(
            structure=structure,
            kind="ORG",
            local_part="accueil",
            responsible=user,
            display_name=value if where == "org" else "Accueil",
        )
    subject = value if where == "subject" else "Compte rendu"

    raw, _ = message_build(
        mailbox=box, actor=user, draft=Draft(to=[REMOTE], subject=subject), patients=[]
    )

    _one_of_each(raw)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    shown = str(parsed["Subject"]) + str(parsed["From"]) + str(parsed.get("Sender", ""))
    if where != "holder":  # (the holder's name is upper-cased first, ECO.2.2.7)
        assert "x@evil.example" in shown  # the text stays readable, in its own header


@pytest.mark.parametrize(
    "to", ["a@exemple.fr\r\nBcc: x@evil.example", "=?utf-8?q?a=0D=0A?= <a@exemple.fr>"]
)
def test_an_address_header_that_would_be_two_lines_is_refused_and_not_written(to: str) -> None:
    message = EmailMessage(policy=email.policy.SMTP)
    header_set(message, "To", "b@exemple.fr")

    with pytest.raises(HeaderRefused):
        header_set(message, "To", to)

    assert message.get_all("To") == ["b@exemple.fr"] and b"evil" not in message.as_bytes()


def test_a_subject_that_decodes_to_a_header_is_sent_as_one_subject(doctor) -> None:
    user, box = doctor

    response = _post(user, box, a=REMOTE, objet=INJECTIONS["q-crlf"])

    assert response.status_code == 302
    _one_of_each(bytes(OutboundMessage.objects.get().content))
    [copy] = _sent(box)
    assert "Bcc" not in copy and "x@evil.example" in str(copy["Subject"])


# --- Read receipts we send (RFC 8098) --------------------------------------------------------


def _colleague_reads(doctor) -> tuple[User, Mailbox, Mailbox]:
    """Claire writes to Paul (a BAL we host) asking for a read receipt; Paul's copy is there."""
    user, box = doctor
    paul = make_professional(first_name="Paul", last_name="Roux")
    colleague = make_mailbox(structure=box.structure, owner=paul, local_part="paul.roux")
    wait_provisioned(colleague.address)
    assert _post(user, box, a=colleague.address, accuse_lecture="on").status_code == 302
    message_relay(public_id=str(OutboundMessage.objects.get().public_id))
    return paul, colleague, box


def test_opening_a_message_that_asks_for_a_receipt_asks_and_sends_it_once(doctor) -> None:
    paul, colleague, box = _colleague_reads(doctor)
    page = _client(paul).get(f"/bal/{colleague.public_id}/messages/1/?dossier=INBOX")
    assert "L'expéditeur demande un accusé de lecture" in page.content.decode()
    assert OutboundMessage.objects.count() == 1  # nothing is sent by opening

    answer = _client(paul).post(
        f"/bal/{colleague.public_id}/messages/1/accuse/", {"dossier": "INBOX", "reponse": "envoyer"}
    )
    assert answer.status_code == 302
    report = OutboundMessage.objects.exclude(pk=OutboundMessage.objects.earliest("id").pk).get()
    assert (report.origin, report.envelope_from, report.author) == ("report", "", paul)
    parsed = email.message_from_bytes(bytes(report.content), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "disposition-notification"
    notification = [
        p for p in parsed.iter_parts() if p.get_content_type() == "message/disposition-notification"
    ]
    assert (
        notification and "manual-action/MDN-sent-manually; displayed" in notification[0].as_string()
    )
    assert AuditEvent.objects.filter(action="message.mdn_sent", actor=paul).exists()

    message_relay(public_id=str(report.public_id))  # delivered to Claire's BAL, here
    claire_row = OutboundDelivery.objects.get(message__mailbox=box)
    assert claire_row.read_at is not None  # the Sent copy says « lu »
    # The receipt itself is filed in « Accusés », not one more unread message in the INBOX.
    with MailStore(box.address) as store:
        assert store.page("INBOX").total == 0
        assert store.page("Accuses").total == 1

    again = _client(paul).get(f"/bal/{colleague.public_id}/messages/1/?dossier=INBOX")
    assert "demande un accusé de lecture" not in again.content.decode()
    second = _client(paul).post(
        f"/bal/{colleague.public_id}/messages/1/accuse/",
        {"dossier": "INBOX", "reponse": "envoyer"},
        follow=True,
    )
    assert "déjà été traité" in second.content.decode()
    assert OutboundMessage.objects.count() == 2


def test_declining_a_receipt_sends_nothing_and_is_not_asked_again(doctor) -> None:
    paul, colleague, _box = _colleague_reads(doctor)
    _client(paul).post(
        f"/bal/{colleague.public_id}/messages/1/accuse/", {"dossier": "INBOX", "reponse": "refuser"}
    )
    assert OutboundMessage.objects.count() == 1
    page = (
        _client(paul).get(f"/bal/{colleague.public_id}/messages/1/?dossier=INBOX").content.decode()
    )
    assert "demande un accusé de lecture" not in page
    assert AuditEvent.objects.filter(action="message.mdn_declined", actor=paul).exists()


def test_a_read_receipt_for_a_subject_that_decodes_to_a_header_adds_none(doctor) -> None:
    _user, box = doctor
    paul = make_professional(first_name="Paul", last_name="Roux")
    colleague = make_mailbox(structure=box.structure, owner=paul, local_part="paul.roux")
    wait_provisioned(colleague.address)
    deliver(
        colleague.address,
        make_message(
            to=colleague.address,
            sender=f"Claire Martin <{box.address}>",
            subject=INJECTIONS["nested"],
            extra_headers=f"Disposition-Notification-To: {box.address}\r\n",
        ),
    )

    answer = _client(paul).post(
        f"/bal/{colleague.public_id}/messages/1/accuse/", {"dossier": "INBOX", "reponse": "envoyer"}
    )

    assert answer.status_code == 302
    report = OutboundMessage.objects.get(origin=OutboundMessage.Origin.REPORT)
    _one_of_each(bytes(report.content))


def test_a_reader_without_the_send_right_is_not_asked(doctor) -> None:
    _paul, colleague, _box = _colleague_reads(doctor)
    secretary = make_professional(first_name="Sophie", last_name="Petit")
    grant(colleague, secretary, can_send=False)
    page = _client(secretary).get(f"/bal/{colleague.public_id}/messages/1/?dossier=INBOX")
    assert "demande un accusé de lecture" not in page.content.decode()


# --- Autocomplete: recent correspondents first ------------------------------------------------


def test_recent_correspondents_come_first_in_the_suggestions(doctor) -> None:
    user, box = doctor
    assert _post(user, box, a=REMOTE).status_code == 302
    fragment = _client(user).get(
        "/bal/destinataires/suggestions/", {"q": "durand"}, HTTP_HX_REQUEST="true"
    )
    page = fragment.content.decode()
    assert f'data-address="{REMOTE}"' in page and "Correspondant récent" in page
    outsider = make_professional(first_name="Inconnu", last_name="Dehors")
    assert (
        _client(outsider).get("/bal/destinataires/suggestions/", {"q": "durand"}).status_code == 404
    )


def test_the_unknown_address_policy_can_refuse(doctor, settings) -> None:
    user, box = doctor
    settings.ANNUAIRE_UNKNOWN_POLICY = "refuse"
    response = _post(user, box, a=REMOTE)
    assert response.status_code == 400
    assert "Adresse inconnue de l&#x27;annuaire national" in response.content.decode()
    assert not OutboundMessage.objects.exists()


# --- Drafts ------------------------------------------------------------------------------------


def _drafts(box: Mailbox) -> list[EmailMessage]:
    with MailStore(box.address) as store:
        store.client.select_folder("Drafts", readonly=True)
        uids = store.client.search(["ALL"])
        fetched = store.client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return [
        m
        for m in (
            email.message_from_bytes(d[b"BODY[]"], policy=email.policy.default)
            for d in fetched.values()
        )
        if isinstance(m, EmailMessage)
    ]


TOKEN = "0123456789abcdef0123456789abcdef"


def test_a_draft_is_saved_once_however_often_and_resumed(doctor) -> None:
    user, box = doctor
    first = _post(
        user, box, action="brouillon", brouillon=TOKEN, objet="Brouillon 1", corps="Début"
    )
    assert first.status_code == 302 and "brouillon=" in first["Location"]
    second = _post(
        user,
        box,
        action="brouillon",
        brouillon=TOKEN,
        a=REMOTE,
        objet="Brouillon 2",
        corps="Suite",
        pieces=[SimpleUploadedFile("bilan.pdf", b"%PDF-1.4 bilan", content_type="application/pdf")],
    )
    [draft] = _drafts(box)
    assert (str(draft["Subject"]), str(draft["X-MSS-Portal-Draft"])) == ("Brouillon 2", TOKEN)
    assert not OutboundMessage.objects.exists()  # nothing sent

    page = _client(user).get(second["Location"]).content.decode()
    assert 'value="Brouillon 2"' in page and "Suite" in page and REMOTE in page
    assert "bilan.pdf" in page  # kept with the draft

    uid = int(second["Location"].rsplit("=", 1)[1])
    sent = _post(
        user, box, a=REMOTE, objet="Brouillon 2", corps="Suite", brouillon=TOKEN, brouillon_uid=uid
    )
    assert sent.status_code == 302 and "dossier=Sent" in sent["Location"]
    [copy] = _sent(box)
    assert [p.get_filename() for p in copy.iter_attachments()] == ["bilan.pdf"]
    assert _drafts(box) == []  # sent: the draft goes


def test_two_saves_of_one_draft_at_once_the_second_waits(doctor) -> None:
    from django.core.cache import cache

    user, box = doctor
    _post(user, box, action="brouillon", brouillon=TOKEN, objet="Version 1")
    assert cache.add(f"draft-lock:{box.pk}:{TOKEN}", "1", 60)  # a save in progress
    try:
        busy = _post(user, box, action="brouillon", brouillon=TOKEN, objet="Version 2")
    finally:
        cache.delete(f"draft-lock:{box.pk}:{TOKEN}")
    assert busy.status_code == 409
    assert "déjà en cours d&#x27;enregistrement" in busy.content.decode()
    [draft] = _drafts(box)
    assert str(draft["Subject"]) == "Version 1"


# --- What became of a sent message, in the Sent list -------------------------------------------


@pytest.mark.parametrize(
    ("states", "shown"),
    [
        ([("queued", None)], "En attente"),
        ([("relayed", None)], "Transmis"),
        ([("delivered", None)], "Remis"),
        ([("delivered", "read")], "Lu"),
        ([("delivered", "read"), ("relayed", None)], "Transmis"),
        ([("delivered", "read"), ("failed", None)], "Échec"),
    ],
    ids=["queued", "relayed", "delivered", "read", "least-advanced", "failure-first"],
)
def test_the_sent_list_shows_what_became_of_each_message(
    doctor, states: list[tuple[str, str | None]], shown: str
) -> None:
    user, box = doctor
    recipients = ", ".join(f"dr.{i}@operateur-test.mssante.fr" for i in range(len(states)))
    assert _post(user, box, a=recipients).status_code == 302
    rows = list(OutboundDelivery.objects.order_by("recipient"))
    for row, (status, read) in zip(rows, states, strict=True):
        row.status = status
        row.read_at = timezone.now() if read else None
        row.last_reply = "550 5.1.1 <x>: Recipient address rejected" if status == "failed" else ""
        row.save()

    html = _client(user).get(f"/bal/{box.public_id}/?dossier=Sent").content.decode()

    cell = re.search(r'<td class="delivery delivery--(\w+)">(.*?)</td>', html, re.S)
    assert cell is not None and cell.group(2).strip().endswith(shown)


def test_a_failure_is_explained_in_french_on_the_sent_message(doctor) -> None:
    user, box = doctor
    assert _post(user, box, a=REMOTE).status_code == 302
    OutboundDelivery.objects.update(
        status="failed", last_reply="550 5.1.1 <dr.durand@operateur-test.mssante.fr>: unknown"
    )
    with MailStore(box.address) as store:
        store.client.select_folder("Sent", readonly=True)
        [uid] = store.client.search(["ALL"])

    page = _client(user).get(f"/bal/{box.public_id}/messages/{uid}/?dossier=Sent")

    html = page.content.decode()
    assert "L&#x27;adresse n&#x27;existe pas chez l&#x27;opérateur du destinataire." in html
    assert "550 5.1.1" in html  # the technical reply stays as the detail
