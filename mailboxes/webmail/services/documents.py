"""Health documents of a message (mssante-spec §3.2-§3.4): the IHE_XDM.ZIP archives it carries,
parsed by ``mailboxes.documents``, for the « Documents de santé » panel, the document pages and
downloads, and for software (the ``xdm_show`` command today, the REST and IMAP paths next):
one function, ``message_documents``, so that every reader sees the same parse.

Reads are traced like the message's other reads (``_session``: READ asked first, the trace
carries the Message-ID, never content).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.http import Http404

from accounts.audit import Action
from accounts.models import User
from mailboxes.access import Grant
from mailboxes.documents.xdm import Archive, Document, is_xdm_archive, read_archive
from mailboxes.store.mime import (
    Attachment,
    Parsed,
    attachment_bytes,
    attachment_payloads,
    parse_message,
)
from mailboxes.webmail.services.messages import _session

if TYPE_CHECKING:
    from django.http import HttpRequest

CDA_CODES_HEADER = "X-MSS-CODECDA"  # Référentiel #2 ECO.2.4.1
INS_HEADER = "X-MSS-INS"  # Référentiel #2 ECO.2.4.2


@dataclass
class MessageDocuments:
    archives: list[tuple[Attachment, Archive]] = field(default_factory=list)
    cda_codes: list[str] = field(default_factory=list)  # X-MSS-CODECDA, as announced
    ins_qualified: str = ""  # X-MSS-INS: « O », « N » or ""

    @property
    def header_problems(self) -> list[str]:
        """Where the MSSanté headers disagree with the archives (French)."""
        docs = [d for _a, archive in self.archives for d in archive.documents if d.cda]
        problems = []
        found = {d.type_code for d in docs}
        if self.cda_codes and sorted(set(self.cda_codes)) != sorted(found):
            problems.append(
                "Les types annoncés dans X-MSS-CODECDA ne correspondent pas aux documents de "
                "l'archive."
            )
        # Ref#2 §3.8.2: qualified means the INS, its OID and the four identity traits.
        qualified = any(
            d.cda is not None
            and d.cda.ins
            and d.cda.ins_oid
            and d.cda.family
            and d.cda.given
            and d.cda.birth_date
            and d.cda.sex
            for d in docs
        )
        if self.ins_qualified == "O" and not qualified:
            problems.append(
                "X-MSS-INS annonce une INS qualifiée, mais aucun document ne porte l'INS avec "
                "ses traits d'identité."
            )
        return problems

    def as_json(self) -> dict[str, Any]:
        """Plain values for software: patients, documents, files (no file content)."""
        return {
            "codes_cda": self.cda_codes,
            "ins_qualifie": self.ins_qualified,
            "problemes": self.header_problems,
            "archives": [
                {
                    "piece": attachment.index,
                    "nom": attachment.filename,
                    "problemes": archive.problems,
                    "patients": [vars(p) for p in archive.patients],
                    "documents": [_document_json(d) for d in archive.documents],
                    "fichiers": [{"nom": n, "taille": s} for n, s in archive.files],
                }
                for attachment, archive in self.archives
            ],
        }


def _document_json(doc: Document) -> dict[str, Any]:
    return {
        "numero": doc.number,
        "chemin": doc.path,
        "type_code": doc.type_code,
        "type_libelle": doc.type_label,
        "auteur": doc.author,
        "structure": doc.structure,
        "date": doc.date,
        "confidentialite": doc.confidentiality,
        "empreinte_conforme": doc.hash_ok,
        "taille_conforme": doc.size_ok,
        "taille": doc.size,
        "niveau_cda": doc.cda.level if doc.cda else None,
        "titre": doc.cda.title if doc.cda else "",
        "sections": [s.title for s in doc.cda.sections] if doc.cda else [],
        "problemes": doc.problems,
    }


def documents_of(raw: bytes, parsed: Parsed | None = None) -> MessageDocuments:
    """Every IHE_XDM.ZIP attachment of a raw message, parsed (never raises on content).
    ``parsed``, the message as the page already parsed it (``mime.parse_message``), spares a
    second MIME parse of ``raw``: the archives are taken from its parts."""
    if parsed is None or parsed.source is None:
        parsed = parse_message(raw)
    archives = attachment_payloads(parsed, is_xdm_archive)
    return MessageDocuments(
        archives=[(attachment, read_archive(data)) for attachment, data in archives],
        cda_codes=[c.strip() for c in parsed.mss_codecda.split(",") if c.strip()],
        ins_qualified=parsed.mss_ins.strip().upper()[:1],
    )


def message_documents(
    *,
    grant: Grant,
    actor: User | None,
    folder: str,
    uid: int,
    request: HttpRequest | None = None,
) -> MessageDocuments:
    """The health documents of one message (READ). Does not mark it read. Raises Http404
    for a missing message, FolderInvalid, StoreUnavailable; traced as a read
    (``purpose: documents``)."""
    with _session(
        grant=grant,
        actor=actor,
        action=Action.MESSAGE_READ,
        request=request,
        details={"folder": folder, "uid": uid, "purpose": "documents"},
        folders=[folder],
    ) as (store, traced):
        found = store.fetch(folder, uid, mark_seen=False)
        if found is None:
            raise Http404
        traced["message_id"] = store.message_ids(folder, [uid]).get(uid, "")
    return documents_of(found[0])


def document_open(
    *,
    grant: Grant,
    actor: User | None,
    folder: str,
    uid: int,
    index: int,
    number: int,
    download: str = "",
    request: HttpRequest | None = None,
) -> Document:
    """Document ``number`` of the archive at attachment ``index`` (READ), for its page or, with
    ``download`` (« cda », « pdf »), for a download (traced as one). Raises Http404 when the
    message, the archive or the document does not exist."""
    action = Action.MESSAGE_ATTACHMENT_DOWNLOAD if download else Action.MESSAGE_READ
    details = {"folder": folder, "uid": uid, "part": index, "document": number}
    if download:
        details["file"] = download
    with _session(
        grant=grant, actor=actor, action=action, request=request, details=details,
        folders=[folder],
    ) as (store, traced):  # fmt: skip
        found = store.fetch(folder, uid, mark_seen=False)
        result = attachment_bytes(found[0], index) if found else None
        if result is None or not is_xdm_archive(result[0].filename):
            raise Http404
        traced["message_id"] = store.message_ids(folder, [uid]).get(uid, "")
        doc = read_archive(result[1]).document(number)
        if doc is None or doc.cda is None:
            raise Http404
    return doc
