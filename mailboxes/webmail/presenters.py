"""Plain values for the message list template: a 50-row page renders in a few milliseconds
when dates, sizes and URLs are prepared once here rather than by template filters per cell."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from urllib.parse import quote

from django.urls import reverse
from django.utils import timezone

from accounts.typography import octets
from mailboxes.models import MessageHandling, OutboundDelivery
from mailboxes.store.imap import Page, Summary
from mailboxes.store.mime import display_subject

OUTGOING = {"Sent", "Drafts"}


@dataclass(frozen=True)
class Row:
    uid: int
    url: str
    who: str
    subject: str
    date_iso: str
    date_text: str
    size_text: str
    seen: bool
    flagged: bool
    has_attachments: bool
    author: str = ""  # « Envoyé par … » when a colleague wrote from the team BAL
    handling: str = ""  # « Pris en charge par … · 14:05 » / « Terminé par … »
    handling_state: str = ""  # taken / done / "" (à traiter)
    folder_label: str = ""  # a search in every folder: the folder each message is in
    thread_size: int = 0  # the conversation view: on a conversation's first message, its size
    thread_reply: bool = False  # the conversation view: a message after the first
    delivery: str = ""  # Sent: attente / transmis / remis / lu / echec ("" when unknown)
    delivery_text: str = ""


def _who(summary: Summary, outgoing: bool) -> str:
    if outgoing:
        return ", ".join(r.name or r.email for r in summary.recipients[:2])
    if summary.sender is None:
        return ""
    return summary.sender.name or summary.sender.email


def handling_text(handling: MessageHandling | None) -> str:
    """« Pris en charge par Claire MARTIN le 03/12 à 14:05 », « Terminé par … »."""
    if handling is None:
        return ""
    who = handling.by.display_name if handling.by else "—"
    when = timezone.localtime(handling.at)
    verb = "Pris en charge" if handling.state == MessageHandling.State.TAKEN else "Terminé"
    return f"{verb} par {who} le {when:%d/%m} à {when:%H:%M}"


DELIVERY_TEXTS = {
    "attente": "En attente",
    "transmis": "Transmis",
    "remis": "Remis",
    "lu": "Lu",
    "echec": "Échec",
}


def delivery_state(deliveries: list[OutboundDelivery]) -> str:
    """One word for a sent message's recipients: a failure first (someone must act), then the
    least advanced of the others (« remis » only when every recipient has it)."""
    Status = OutboundDelivery.Status
    if not deliveries:
        return ""
    if any(d.status == Status.FAILED for d in deliveries):
        return "echec"
    if all(d.read_at for d in deliveries):
        return "lu"
    if all(d.status == Status.DELIVERED for d in deliveries):
        return "remis"
    if all(d.status in (Status.RELAYED, Status.DELIVERED) for d in deliveries):
        return "transmis"
    return "attente"


# RFC 3463 enhanced status codes, in the words of the person who sent the message.
FAILURE_REASONS = [
    ("5.1.1", "L'adresse n'existe pas chez l'opérateur du destinataire."),
    ("5.1.", "L'adresse du destinataire n'est pas valide."),
    ("5.2.2", "La boîte du destinataire est pleine."),
    ("5.2.", "La boîte du destinataire n'accepte pas de message."),
    ("5.3.4", "Le message est trop volumineux pour l'opérateur du destinataire."),
    ("5.7.", "L'opérateur du destinataire a refusé le message (sécurité ou espace de confiance)."),
    ("4.", "L'opérateur du destinataire n'a pas pu être joint à temps."),
    ("5.4.", "L'opérateur du destinataire est injoignable."),
]


def failure_reason(reply: str) -> str:
    """The French reason of a failed delivery from its SMTP reply (the reply itself stays
    shown as the technical detail)."""
    words = reply.split()
    code = next((w for w in words[:3] if w[:1] in "45" and w.count(".") == 2), "")
    for prefix, text in FAILURE_REASONS:
        if code.startswith(prefix):
            return text
    return "Le message n'a pas pu être remis."


def rows(
    page: Page,
    mailbox_public_id: object,
    handlings: dict[str, MessageHandling] | None = None,
    deliveries: dict[str, list[OutboundDelivery]] | None = None,
    *,
    list_qs: str = "",
    labels: dict[str, str] | None = None,
) -> list[Row]:
    """The rows of a page; each link carries ``list_qs`` (the list's page, order and search)
    so that the message page can go back to it and to its neighbours. ``labels``: folder
    name -> label, given for a search in every folder (each row names its folder)."""
    base = reverse("mailboxes:message", args=[mailbox_public_id, 0]).removesuffix("0/")
    extra = f"&{list_qs}" if list_qs else ""
    first_of = {t[0]: len(t) for t in page.threads if len(t) > 1}
    replies = {uid for t in page.threads for uid in t[1:]}
    result = []
    for m in page.messages:
        folder = m.folder or page.folder
        outgoing = folder in OUTGOING
        suffix = f"/?dossier={quote(folder, safe='')}{extra}"
        when = m.date
        if when is not None and timezone.is_naive(when):
            when = timezone.make_aware(when, UTC)
        local = timezone.localtime(when) if when else None
        result.append(
            Row(
                uid=m.uid,
                url=f"{base}{m.uid}{suffix}",
                who=_who(m, outgoing),
                subject=display_subject(m.subject),
                date_iso=local.isoformat() if local else "",
                date_text=local.strftime("%d/%m/%Y %H:%M") if local else "",
                size_text=str(octets(m.size)),
                seen=m.seen,
                flagged=m.flagged,
                has_attachments=m.has_attachments,
                author=(m.author.name or m.author.email) if m.author else "",
                handling=handling_text((handlings or {}).get(m.message_id)),
                handling_state="done" if m.done else "taken" if m.taken else "",
                folder_label=labels.get(folder, folder) if labels is not None else "",
                thread_size=first_of.get(m.uid, 0),
                thread_reply=m.uid in replies,
                delivery=(state := delivery_state((deliveries or {}).get(m.message_id, []))),
                delivery_text=DELIVERY_TEXTS.get(state, ""),
            )
        )
    return result


# What may show inline, from our origin: PDF (Chromium's viewer) and raster images. Never SVG
# (it runs script), never HTML or anything else: those stay downloads.
PREVIEW_TYPES = {
    "application/pdf": "pdf",
    "image/png": "image",
    "image/jpeg": "image",
    "image/gif": "image",
    "image/webp": "image",
}


def preview_type(content_type: str) -> str:
    """« pdf », « image », or "" for a type that is never shown inline."""
    return PREVIEW_TYPES.get(content_type.lower().strip(), "")
