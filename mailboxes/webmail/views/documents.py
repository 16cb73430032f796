"""Webmail: the health documents of a message (mssante-spec §3.3-§3.4). A CDA opens on a page
of ours: a level-1 CDA shows its embedded PDF from our origin, a structured one its header and
narrative sections (mapped to plain elements by ``mailboxes.documents.cda``, then sanitised
here); the CDA and the PDF download like attachments (``nosniff``, their own CSP)."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from accounts.decorators import professional_required
from accounts.models import User
from mailboxes.access import access_mailbox
from mailboxes.documents.cda import INS_KINDS, SEX
from mailboxes.documents.xdm import Document
from mailboxes.webmail.forms import MessageQuery
from mailboxes.webmail.sanitize import sanitize
from mailboxes.webmail.services.documents import document_open

# The PDF is shown from our origin in a frame of the document page only: no script, style,
# font or connection of ours applies to it, no form, no base, no embedding elsewhere.
PDF_CSP = (
    "default-src 'none'; object-src 'self'; frame-ancestors 'self'; form-action 'none'; "
    "base-uri 'none'"
)


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # professional_required ran first
    return request.user


def _open(
    request: HttpRequest, public_id: str, uid: int, index: int, number: int, download: str = ""
) -> tuple[Document, str]:
    """Parse (the folder) -> access (the BAL) -> the document (traced); 404 for any miss."""
    grant = access_mailbox(_user(request), public_id)
    query = MessageQuery(request.GET)
    query.refuse_control_characters()
    if not query.is_valid():
        raise Http404
    folder = query.cleaned_data["dossier"]
    doc = document_open(
        grant=grant,
        actor=_user(request),
        folder=folder,
        uid=uid,
        index=index,
        number=number,
        download=download,
        request=request,
    )
    return doc, folder


def _disposition(doc: Document, extension: str, *, download: bool) -> str:
    """A file name from the type code, reduced to safe characters (the code comes from the
    document: a quote or a line break must not reach the header)."""
    code = re.sub(r"[^A-Za-z0-9.-]+", "-", doc.type_code)[:40].strip("-.") or "cda"
    name = f"document-{doc.number}-{code}.{extension}"
    return content_disposition_header(download, name) or "attachment"


@professional_required
@require_GET
def document(request: HttpRequest, public_id: str, uid: int, index: int, doc: int) -> HttpResponse:
    found, folder = _open(request, public_id, uid, index, doc)
    cda = found.cda
    assert cda is not None  # document_open answers 404 otherwise
    qs = "?" + urlencode({"dossier": folder})
    args = [public_id, uid, index, doc]
    sections = [(s.title, s.level, sanitize(s.html).html) for s in cda.sections]
    return render(
        request,
        "mailboxes/document.html",
        {
            "doc": found,
            "cda": cda,
            "ins_kind": INS_KINDS.get(cda.ins_oid, ""),
            "sex": SEX.get(cda.sex, cda.sex),
            "sections": sections,
            "cda_url": reverse("mailboxes:document_cda", args=args) + qs,
            "pdf_url": reverse("mailboxes:document_pdf", args=args) + qs,
            "back": reverse("mailboxes:message", args=[public_id, uid]) + qs,
        },
    )


@professional_required
@require_GET
def document_cda(
    request: HttpRequest, public_id: str, uid: int, index: int, doc: int
) -> HttpResponse:
    """The CDA file itself, as a download (never rendered: it may name a stylesheet)."""
    found, _folder = _open(request, public_id, uid, index, doc, download="cda")
    assert found.cda is not None
    response = HttpResponse(found.cda.source, content_type="application/octet-stream")
    response["Content-Disposition"] = _disposition(found, "xml", download=True)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@professional_required
@require_GET
@xframe_options_sameorigin
def document_pdf(
    request: HttpRequest, public_id: str, uid: int, index: int, doc: int
) -> HttpResponse:
    """The PDF embedded in a level-1 CDA, shown inline (frame of the document page) or, with
    ``telecharger``, as a download. Only a whole PDF is served (cda.pdf_problem)."""
    found, _folder = _open(request, public_id, uid, index, doc, download="pdf")
    if not found.has_pdf:
        raise Http404
    assert found.cda is not None
    response = HttpResponse(found.cda.embedded, content_type="application/pdf")
    response["Content-Disposition"] = _disposition(
        found, "pdf", download=bool(request.GET.get("telecharger"))
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = PDF_CSP
    response["Referrer-Policy"] = "no-referrer"
    return response
