"""Webmail, printing and previewing: the print page of a message, the preview of a PDF or
image attachment in a frame from our origin. Each view: parse (a form) -> access (a selector)
-> one service -> render, like views.reading, whose helpers they share."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from accounts.decorators import professional_required
from mailboxes.access import Grant, access_mailbox
from mailboxes.store.imap import SPECIAL_FOLDERS
from mailboxes.store.mime import display_subject
from mailboxes.webmail.forms import MessageQuery
from mailboxes.webmail.presenters import preview_type
from mailboxes.webmail.services import messages as svc
from mailboxes.webmail.views.documents import PDF_CSP
from mailboxes.webmail.views.reading import _message_url, _user

IMAGE_CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'; "
    "form-action 'none'; base-uri 'none'; sandbox"
)


@professional_required
@require_GET
def message_print(request: HttpRequest, public_id: str, uid: int) -> HttpResponse:
    """The print page of a message: its headers and its text, nothing of the portal around
    (portal.css hides the rest under @media print); « Imprimer » opens the browser's dialog."""
    grant = access_mailbox(_user(request), public_id)
    query = MessageQuery(request.GET)
    query.refuse_control_characters()
    if not query.is_valid():
        raise Http404
    folder_name = query.cleaned_data["dossier"]
    parsed, _summary = svc.message_print(
        grant=grant, actor=_user(request), folder=folder_name, uid=uid, request=request
    )
    return render(
        request,
        "mailboxes/print.html",
        {
            "grant": grant,
            "mailbox": grant.mailbox,
            "folder": folder_name,
            "folder_label": SPECIAL_FOLDERS.get(folder_name, folder_name),
            "message": parsed,
            "subject": display_subject(parsed.subject),
            "uid": uid,
            "back": _message_url(grant.mailbox.public_id, uid, folder_name),
        },
    )


def _preview_open(
    request: HttpRequest, public_id: str, uid: int, index: int
) -> tuple[Grant, str, Any, bytes, str]:
    grant = access_mailbox(_user(request), public_id)
    query = MessageQuery(request.GET)
    query.refuse_control_characters()
    if not query.is_valid():
        raise Http404
    folder_name = query.cleaned_data["dossier"]
    meta, data = svc.attachment_open(
        grant=grant, actor=_user(request), folder=folder_name, uid=uid, index=index,
        request=request, preview=True,
    )  # fmt: skip
    kind = preview_type(meta.content_type)
    if not kind:
        raise Http404
    return grant, folder_name, meta, data, kind


@professional_required
@require_GET
def attachment_preview(request: HttpRequest, public_id: str, uid: int, index: int) -> HttpResponse:
    """The preview page of a PDF or image attachment: the file in a frame from our origin."""
    grant, folder_name, meta, _data, kind = _preview_open(request, public_id, uid, index)
    args = [grant.mailbox.public_id, uid, index]
    qs = "?" + urlencode({"dossier": folder_name})
    return render(
        request,
        "mailboxes/attachment_preview.html",
        {
            "mailbox": grant.mailbox,
            "attachment": meta,
            "kind": kind,
            "file_url": reverse("mailboxes:attachment_file", args=args) + qs,
            "download_url": reverse("mailboxes:attachment", args=args) + qs,
            "back": _message_url(grant.mailbox.public_id, uid, folder_name),
        },
    )


@professional_required
@require_GET
@xframe_options_sameorigin
def attachment_file(request: HttpRequest, public_id: str, uid: int, index: int) -> HttpResponse:
    """The attachment inline, for the preview frame only: PDF or raster image (its declared
    type, with nosniff), nothing else (404). An image frame is sandboxed (CSP sandbox and the
    iframe's attribute); Chromium shows no PDF in a sandboxed frame, so a PDF gets the
    document PDFs' CSP instead (no script, style, connection or form of ours)."""
    _grant, _folder, meta, data, kind = _preview_open(request, public_id, uid, index)
    content_type = meta.content_type.lower().strip()
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(False, meta.filename) or "inline"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = PDF_CSP if kind == "pdf" else IMAGE_CSP
    response["Referrer-Policy"] = "no-referrer"
    return response
