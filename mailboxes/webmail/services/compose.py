"""Writing from the webmail: check every recipient, build the message as Référentiel #2 wants
it, and hand it to the outbound spool (ARCHITECTURE.md, data flow 2).

Rules (mssante-spec §3): UTF-8 text (ECO.2.2.3), `From:` label with `_` separators (ECO.2.2.7,
§3.5), `X-MSS-NIL` on every mail (ECO.2.4.3), `X-MSS-MES: FIN` to close a patient exchange
(ECO.2.2.8), DSN request by RFC 3461 NOTIFY (MSS/va1.15), read receipt by
`Disposition-Notification-To` (RFC 8098), patients only from a valid INS (§3.7), 25 MB at Mon
Espace Santé (§3.8). A health document (« Joindre un document de santé », §3.2-§3.4) is built
by ``mailboxes.documents.build`` at send time: archive, PDF/A, subject (ECO.2.1.3) and
`X-MSS-CODECDA`/`X-MSS-INS` (ECO.2.4.1, ECO.2.4.2).
"""

from __future__ import annotations

import email.policy
import json
import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.formats import number_format

from accounts.models import Structure, StructureDomain, User
from annuaire.ins import INS
from annuaire.selectors import MALFORMED, RecipientVerdict, recipient_check
from mailboxes.access import Access, Grant, require
from mailboxes.documents.build import (
    AuthorIdentity,
    DocumentRefused,
    HealthDocument,
    PatientIdentity,
    health_document_build,
)
from mailboxes.documents.codes import sector_of
from mailboxes.errors import MailboxSuspended
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.store.headers import header_set
from mailboxes.store.mime import attachment_bytes, parse_message
from mailboxes.transport.relay import Recipient
from mailboxes.webmail.services.outbound import message_commit
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest

MES_LIMIT = 25 * 1024 * 1024  # Mon Espace Santé refuses more (ENS v1.3, §3.8)
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
# A subject already marked as a reply or a forward, in the usual languages of mail clients:
# « RE : », « Re: », « TR : », « Fwd: », « AW: », « WG: », « RIF: », « SV: », « VS: »,
# « Re[2]: ». A word that merely starts with these letters (« Rendez-vous », « Relance »,
# « Transfert ») is not one: the prefix ends with a colon.
_PREFIXES = {
    "RE": re.compile(r"^\s*(re|aw|rif|sv|antw|réf)\s*(\[\d+\])?\s*:", re.IGNORECASE),
    "TR": re.compile(r"^\s*(tr|fwd?|wg|enc)\s*(\[\d+\])?\s*:", re.IGNORECASE),
}


class RecipientsRefused(PortalError):
    code = "recipients_refused"
    http_status = 400
    user_message = "Certains destinataires ne peuvent pas recevoir ce message."

    def __init__(self, verdicts: list[RecipientVerdict]) -> None:
        super().__init__()
        self.verdicts = verdicts


class PatientConfirmationRequired(PortalError):
    code = "patient_confirmation"
    http_status = 400
    user_message = "Confirmez l'identité du ou des patients avant d'envoyer."


class MessageTooLarge(PortalError):
    code = "message_too_large"
    http_status = 413
    user_message = "Le message est trop volumineux."


class HealthDocumentRefused(PortalError):
    code = "health_document_refused"
    http_status = 400
    user_message = "Le document de santé ne peut pas être joint."


@dataclass(frozen=True)
class DocumentRequest:
    """« Joindre un document de santé » as typed: the PDF, its patient, type and act date."""

    pdf: bytes
    patient: PatientIdentity
    type_code: str
    act_date: date


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes


# The fields of « Joindre un document de santé » a draft keeps, as typed (the form checks them
# again when the draft is sent).
DOCUMENT_FIELDS = (
    "doc_type",
    "doc_date_acte",
    "doc_ins",
    "doc_nom",
    "doc_prenom",
    "doc_naissance",
    "doc_sexe",
    "doc_qualifiee",
)
DRAFT_DOCUMENT_HEADER = "X-MSS-Portal-Document"  # on the draft's parts that hold the document


@dataclass(frozen=True)
class DraftDocument:
    """A health document kept in a draft, not built yet: the PDF as given and the fields as
    typed (strings, ``DOCUMENT_FIELDS``)."""

    pdf: bytes
    pdf_name: str
    fields: dict[str, str]


@dataclass
class Draft:
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)  # envelope only, never a header once sent
    subject: str = ""
    body: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    delivery_receipt: bool = False
    read_receipt: bool = False
    block_reply: bool = False
    in_reply_to: str = ""
    references: str = ""
    patient_confirmed: bool = False
    document: DocumentRequest | None = None  # built at send time, never kept in a draft
    kept_document: DraftDocument | None = None  # what a saved draft keeps of it instead

    @property
    def recipients(self) -> list[str]:
        seen: dict[str, None] = {}
        for address in [*self.to, *self.cc, *self.bcc]:
            seen.setdefault(address.strip().lower(), None)
        return [a for a in seen if a]


def subject_prefixed(subject: str, prefix: str) -> str:
    """``subject`` with « RE : » or « TR : » (``prefix`` "RE" or "TR") in front, unless it
    already starts with a prefix of that kind (any client's spelling)."""
    subject = (subject or "").strip()
    if _PREFIXES[prefix].match(subject):
        return subject
    return f"{prefix} : {subject}"


def safe_filename(name: str) -> str:
    """An attachment name without path, control characters or reserved characters."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 110 - len(ext)] + dot + ext) if dot and len(ext) <= 10 else name[:120]
    return name or "piece-jointe"


def recipients_review(addresses: list[str]) -> list[RecipientVerdict]:
    """Per address, whether it may receive and why not (shown next to each address). The BALs
    we host must exist and not be closed; the others are judged by the annuaire app."""
    verdicts = [recipient_check(a) for a in addresses]
    domains = {v.address.rpartition("@")[2] for v in verdicts}
    hosted = set(
        StructureDomain.objects.filter(domain__in=domains).values_list("domain", flat=True)
    )
    local = {v.address for v in verdicts if v.address.rpartition("@")[2] in hosted}
    open_boxes = set(
        Mailbox.objects.filter(
            address__in=local, status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED]
        ).values_list("address", flat=True)
    )
    result = []
    for verdict in verdicts:
        if verdict.address in open_boxes:
            # Our own domains are trusted by definition, listed or not (yet) in the whitelist.
            result.append(RecipientVerdict(verdict.address, True))
        elif verdict.address in local and verdict.reason != MALFORMED:
            result.append(
                RecipientVerdict(verdict.address, False, "Aucune BAL de ce nom chez nous.")
            )
        else:
            result.append(verdict)
    return result


def _professional_label(user: User, structure_name: str) -> str:
    """Référentiel #2 ECO.2.2.7 (§3.5): `Titre_Prénom_NOM_Entité`."""
    title = {"DR": "Dr", "PR": "Pr"}.get((user.civility or "").upper(), "")
    parts = [title, user.first_name, (user.last_name or "").upper(), structure_name]
    label = "_".join(p.strip().replace("_", " ") for p in parts if p and p.strip())
    return label or user.national_id or user.username


def sender_label(mailbox: Mailbox) -> str:
    """Référentiel #2 ECO.2.2.7 (§3.5): PER `Titre_Prénom_NOM_Entité`, ORG/APP the entity."""
    if mailbox.kind == Mailbox.Kind.PER and mailbox.owner is not None:
        return _professional_label(mailbox.owner, mailbox.structure.name)
    return mailbox.display_name or mailbox.structure.name


def _address(label: str, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=label, username=local, domain=domain)


def author_header(*, mailbox: Mailbox, actor: User) -> Address | None:
    """The `Sender:` of a message written from ``mailbox`` by ``actor``: None for the holder of
    a PER BAL writing from it; for anyone else (ORG/APP member, delegate) always the author
    (RFC 5322 §3.6.2), labelled with their name and the BAL's structure as ECO.2.2.7 labels a
    PER BAL, at their own PER BAL when they have one, else at this BAL."""
    if mailbox.kind == Mailbox.Kind.PER and mailbox.owner_id == actor.pk:
        return None
    own = sorted(
        Mailbox.objects.filter(
            owner=actor, kind=Mailbox.Kind.PER, status=Mailbox.Status.ACTIVE
        ).values_list("structure_id", "address"),
        key=lambda row: (row[0] != mailbox.structure_id, row[1]),
    )
    address = own[0][1] if own else mailbox.address
    return _address(_professional_label(actor, mailbox.structure.name), address)


def structure_national_id(structure: Structure) -> str:
    """idNat_Struct (annuaire-psc-ins.md): « 1 » + FINESS, « 3 » + SIRET."""
    prefix = "3" if structure.identifier_kind == Structure.IdentifierKind.SIRET else "1"
    return prefix + structure.identifier


def health_document_of(
    *, mailbox: Mailbox, actor: User, request: DocumentRequest
) -> HealthDocument:
    """The archive, PDF/A, subject and headers of ``request``, written by ``actor`` (their
    national id from Pro Santé Connect as the author) for the structure of ``mailbox``
    (author organisation and custodian, its sector as the facility type: codes.sector_of).
    Raises HealthDocumentRefused (French)."""
    if not actor.national_id:
        raise HealthDocumentRefused(
            user_message="Seul un professionnel identifié (RPPS) peut signer un document de santé."
        )
    author = AuthorIdentity(
        national_id=actor.national_id,
        family=(actor.last_name or "").upper(),
        given=actor.first_name or "",
        structure_name=mailbox.structure.name,
        structure_id=structure_national_id(mailbox.structure),
        sector=sector_of(mailbox.structure)[0],
    )
    try:
        return health_document_build(
            pdf=request.pdf,
            patient=request.patient,
            author=author,
            type_code=request.type_code,
            act_date=request.act_date,
            sender=mailbox.address,
            now=datetime.now().astimezone(),
        )
    except DocumentRefused as exc:
        raise HealthDocumentRefused(user_message=str(exc)) from exc


def message_build(
    *,
    mailbox: Mailbox,
    actor: User,
    draft: Draft,
    patients: list[INS],
    keep_bcc: bool = False,
    document: HealthDocument | None = None,
) -> tuple[bytes, str]:
    """The message as it leaves us, and its Message-ID. Every header goes through
    ``header_set`` (one header line each, whatever the subject or the names decode to).
    ``keep_bcc`` writes the Cci addresses as `Bcc:`, for a draft only (RFC 5322 §3.6.3: a sent
    copy does not show them); a draft also keeps its health document unbuilt
    (``draft.kept_document``: the PDF and a JSON part of the fields, each marked with
    ``DRAFT_DOCUMENT_HEADER``). With a health ``document``, the subject is the one ECO.2.1.3
    prescribes, and the archive and its PDF/A follow the other attachments."""
    message = EmailMessage(policy=email.policy.SMTP)
    header_set(message, "From", _address(sender_label(mailbox), mailbox.address))
    author = author_header(mailbox=mailbox, actor=actor)
    if author is not None:
        header_set(message, "Sender", author)
    if draft.to:
        header_set(message, "To", ", ".join(draft.to))
    if draft.cc:
        header_set(message, "Cc", ", ".join(draft.cc))
    if draft.bcc and keep_bcc:
        header_set(message, "Bcc", ", ".join(draft.bcc))
    header_set(message, "Subject", document.subject if document else draft.subject)
    header_set(message, "Date", format_datetime(datetime.now().astimezone()))
    message_id = make_msgid(domain=mailbox.address.rpartition("@")[2])
    header_set(message, "Message-ID", message_id)
    if draft.in_reply_to:
        header_set(message, "In-Reply-To", draft.in_reply_to)
        references = " ".join(p for p in (draft.references, draft.in_reply_to) if p)
        header_set(message, "References", references.strip())
    header_set(message, "X-MSS-NIL", settings.MSS_NIL)  # Référentiel #2 ECO.2.4.3
    if document is not None:
        header_set(message, "X-MSS-CODECDA", document.code_cda)  # ECO.2.4.1: the CDA code
        header_set(message, "X-MSS-INS", document.ins_flag)  # ECO.2.4.2: O if qualified INS
    if patients and draft.block_reply:
        header_set(message, "X-MSS-MES", "FIN")  # ECO.2.2.8: the patient may not answer this one
    if draft.read_receipt:
        header_set(message, "Disposition-Notification-To", mailbox.address)  # RFC 8098 §2.1
    message.set_content(draft.body or "", subtype="plain", charset="utf-8")
    for item in draft.attachments:
        maintype, _, subtype = (item.content_type or "application/octet-stream").partition("/")
        message.add_attachment(
            item.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=item.name,
        )
    if keep_bcc and draft.kept_document is not None:
        kept = draft.kept_document
        fields = json.dumps(kept.fields, ensure_ascii=False).encode()
        for data, subtype, name, kind in (
            (kept.pdf, "pdf", kept.pdf_name, "pdf"),
            (fields, "json", "document-de-sante.json", "champs"),
        ):
            message.add_attachment(data, maintype="application", subtype=subtype, filename=name)
            header_set(list(message.iter_parts())[-1], DRAFT_DOCUMENT_HEADER, kind)
    if document is not None:  # ECO.2.1.5: the archive, and the PDF/A-1 of its document
        message.add_attachment(
            document.archive, maintype="application", subtype="zip", filename="IHE_XDM.ZIP"
        )
        message.add_attachment(
            document.pdf, maintype="application", subtype="pdf", filename=document.pdf_name
        )
    return message.as_bytes(), message_id


def attachments_of(raw: bytes) -> list[Attachment]:
    """The attachments of a received message, to forward them with its text in the body."""
    found = []
    for listed in parse_message(raw).attachments:
        part = attachment_bytes(raw, listed.index)
        if part is not None:
            name = safe_filename(listed.filename)
            found.append(Attachment(name, guess_type(name, listed.content_type), part[1]))
    return found


def guess_type(name: str, declared: str) -> str:
    guessed = mimetypes.guess_type(name)[0]
    return guessed or (declared if re.fullmatch(r"[\w.+-]+/[\w.+-]+", declared or "") else "")


def message_send(
    *, grant: Grant, actor: User, draft: Draft, request: HttpRequest | None = None
) -> OutboundMessage:
    """Send ``draft`` from the BAL of ``grant``.

    Raises RightMissing without the send right, MailboxSuspended on a suspended BAL,
    RecipientsRefused (with every verdict) when any address may not receive,
    PatientConfirmationRequired before the sender confirmed the patients' summaries,
    HealthDocumentRefused when the health document cannot be built (PDF unreadable, CDA
    not schema-valid, no national id), MessageTooLarge beyond the limits, StoreUnavailable
    when the Sent copy cannot be stored (nothing is sent then). On success the message is in
    the spool (durable) and in Sent.
    """
    require(grant, Access.SEND)
    mailbox = grant.mailbox
    if mailbox.status != Mailbox.Status.ACTIVE:
        raise MailboxSuspended()
    verdicts = recipients_review(draft.recipients)
    if not verdicts or any(not v.ok for v in verdicts):
        raise RecipientsRefused(verdicts)
    patients = [v.patient for v in verdicts if v.patient is not None]
    if patients and not draft.patient_confirmed:
        raise PatientConfirmationRequired()
    document = (
        health_document_of(mailbox=mailbox, actor=actor, request=draft.document)
        if draft.document
        else None
    )
    raw, message_id = message_build(
        mailbox=mailbox, actor=actor, draft=draft, patients=patients, document=document
    )
    limit = MES_LIMIT if patients else settings.COMPOSE_MAX_MESSAGE_BYTES
    if len(raw) > limit:
        size = number_format(round(len(raw) / 1048576, 1), 1)
        raise MessageTooLarge(
            user_message=(
                f"Le message fait {size} Mo une fois encodé ; "
                f"la limite est de {limit // 1048576} Mo"
                + (" pour Mon Espace Santé." if patients else ".")
            )
        )
    notify = "SUCCESS,FAILURE" if draft.delivery_receipt else ""
    return message_commit(
        origin=OutboundMessage.Origin.WEBMAIL,
        mailbox=mailbox,
        actor=actor,
        recipients=[Recipient(a, notify, f"rfc822;{a}") for a in draft.recipients],
        content=raw,
        message_id=message_id,
        request=request,
        details={
            "message_id": message_id,
            "recipients": len(draft.recipients),
            "patients": len(patients),
            "size": len(raw),
            "attachments": len(draft.attachments),
            "health_documents": [document.code_cda] if document else [],
        },
    )
