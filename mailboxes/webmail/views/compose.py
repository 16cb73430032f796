"""Webmail, writing side: new message, reply, reply all, forward; recipient checks as you type
(htmx) and again on send. Parse (a form) -> access (a selector) -> one service -> render."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from accounts.decorators import professional_required
from accounts.models import User
from accounts.ratelimit import ANNUAIRE_SUGGEST, rate_limited
from annuaire.ins import PATIENT_DOMAIN, typed_ins
from annuaire.presenters import suggestions_html
from annuaire.selectors import Suggestion, directory_entries, directory_suggest
from mailboxes.access import MISSING, Access, Grant, access_mailbox, usable_mailboxes
from mailboxes.documents.build import PatientIdentity
from mailboxes.errors import RightMissing
from mailboxes.models import Mailbox
from mailboxes.store.headers import HeaderRefused
from mailboxes.store.imap import SENT
from mailboxes.webmail.forms import (
    ComposeForm,
    ComposeQuery,
    SignatureForm,
    attachments_too_large,
    split_addresses,
)
from mailboxes.webmail.selectors import recent_correspondents
from mailboxes.webmail.services import messages as reading
from mailboxes.webmail.services.compose import (
    DOCUMENT_FIELDS,
    Attachment,
    DocumentRequest,
    Draft,
    DraftDocument,
    HealthDocumentRefused,
    MessageTooLarge,
    PatientConfirmationRequired,
    RecipientsRefused,
    attachments_of,
    guess_type,
    message_send,
    recipients_review,
    safe_filename,
    subject_prefixed,
)
from mailboxes.webmail.services.drafts import DraftBusy, draft_discard, draft_open, draft_save
from mailboxes.webmail.services.signatures import signature_set, signature_text, signed
from mssante_portal.errors import PortalError

MODES = ("repondre", "tous", "transferer", "transferer-texte")
HEADINGS = {
    "repondre": "Répondre",
    "tous": "Répondre à tous",
    "transferer": "Transférer",
    "transferer-texte": "Transférer",
}
AUTOSAVE_HEADER = "X-Brouillon-Auto"  # compose.js saving while the person types


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def _senders(grants: list[Grant]) -> list[Grant]:
    return [
        g for g in grants if g.allows(Access.SEND) and g.mailbox.status == Mailbox.Status.ACTIVE
    ]


def _prefill(
    request: HttpRequest, grant: Grant, actor: User, query: dict[str, str]
) -> dict[str, Any]:
    """Initial values for a reply, a reply to all or a forward of ``?uid=&dossier=``."""
    mode, uid, folder = query["mode"], query["uid"], query["dossier"] or "INBOX"
    if mode not in MODES or not uid.isdigit():
        return {}
    original, _ = reading.message_open(
        grant=grant, actor=actor, folder=folder[:200], uid=int(uid), request=request
    )
    subject = original.subject or ""
    quoted = "\n".join(f"> {line}" for line in (original.text or "").splitlines())
    sender = original.sender[0] if original.sender else None
    when = ""
    if original.date is not None:  # the reader's time (Europe/Paris), not the sender's zone
        date = original.date
        aware = date if timezone.is_aware(date) else timezone.make_aware(date, UTC)
        when = timezone.localtime(aware).strftime("%d/%m/%Y à %H:%M")
    if mode == "transferer":  # the original attached whole, as received
        return {
            "objet": subject_prefixed(subject, "TR"),
            "corps": "\n\nLe message d'origine est joint.\n",
            "transfert": f"{folder[:200]}:{uid}",
        }
    if mode == "transferer-texte":  # the original's text in the body, its attachments joined
        names = ", ".join(str(a) for a in original.to)
        header = [
            "-------- Message transféré --------",
            f"De : {sender or ''}",
            f"Date : {when}",
            f"Objet : {subject}",
            f"À : {names}",
        ]
        if original.cc:
            header.append(f"Cc : {', '.join(str(a) for a in original.cc)}")
        return {
            "objet": subject_prefixed(subject, "TR"),
            "corps": "\n\n" + "\n".join(header) + f"\n\n{original.text or ''}\n",
            "transfert": f"{folder[:200]}:{uid}",
            "transfert_texte": True,
        }
    to = [a.email for a in (original.reply_to or original.sender)]
    cc: list[str] = []
    if mode == "tous":
        mine = grant.mailbox.address
        cc = [a.email for a in [*original.to, *original.cc] if a.email.lower() != mine]
    return {
        "a": ", ".join(to),
        "cc": ", ".join(cc),
        "objet": subject_prefixed(subject, "RE"),
        "corps": f"\n\nLe {when}, {sender} a écrit :\n{quoted}\n" if sender else "",
        "en_reponse_a": original.message_id,
        "references": original.references,
    }


def _forwarded(
    grant: Grant, actor: User, request: HttpRequest, ref: str, *, inline: bool
) -> list[Attachment]:
    """The forwarded message ``dossier:uid`` whole (.eml), or only its attachments when its
    text is in the body (``inline``)."""
    folder, _, uid = ref.rpartition(":")
    if not uid.isdigit():
        return []
    raw = reading.message_raw(
        grant=grant, actor=actor, folder=folder, uid=int(uid), request=request
    )
    if inline:
        return attachments_of(raw)
    return [Attachment("message-transfere.eml", "message/rfc822", raw)]


@professional_required
@require_http_methods(["GET", "POST"])
def compose(request: HttpRequest, public_id: str) -> HttpResponse:
    user = _user(request)
    grants = usable_mailboxes(user)
    grant = access_mailbox(user, public_id, among=grants)
    senders = _senders(grants)
    if not senders:
        raise RightMissing(MISSING[Access.SEND])
    choices = [
        (str(g.mailbox.public_id), f"{g.mailbox.display_name} <{g.mailbox.address}>")
        for g in senders
    ]
    context: dict[str, Any] = {
        "grant": grant,
        "mailbox": grant.mailbox,
        "refused": [],
        "patients": [],
        "max_attachments": settings.COMPOSE_MAX_ATTACHMENT_BYTES,
        "heading": HEADINGS.get(request.GET.get("mode", ""), "Nouveau message"),
    }
    if request.method == "GET":
        query = ComposeQuery(request.GET)
        query.refuse_control_characters()
        opened = query.cleaned_data if query.is_valid() else dict.fromkeys(query.fields, "")
        default = grant if grant in senders else senders[0]
        initial = {
            "de": str(default.mailbox.public_id),
            "brouillon": uuid.uuid4().hex,
            **_prefill(request, grant, user, opened),
        }
        if "a" in request.GET and "a" not in initial:  # "Écrire" from the annuaire
            initial["a"] = ", ".join(split_addresses(request.GET["a"][:2000])[:10])
        if not opened["mode"].startswith("transferer") and not opened["brouillon"]:
            # New messages and replies carry the writer's signature for this BAL.
            signature = signature_text(grant=default, actor=user)
            initial["corps"] = signed(str(initial.get("corps", "")), signature)
        if opened["brouillon"].isdigit():  # « Reprendre le brouillon »
            saved = draft_open(
                grant=grant, actor=user, uid=int(opened["brouillon"]), request=request
            )
            initial.update(saved.initial, de=str(grant.mailbox.public_id))
            context["draft_attachments"] = saved.attachments
            context["draft_document"] = saved.document
        if opened["mode"] in ("transferer", "transferer-texte") and "transfert" in initial:
            base = reverse("mailboxes:compose", args=[grant.mailbox.public_id])
            other = "transferer" if opened["mode"] == "transferer-texte" else "transferer-texte"
            switch = {"mode": other, "uid": opened["uid"], "dossier": opened["dossier"]}
            context["forward_switch"] = f"{base}?{urlencode(switch)}"
        context["form"] = ComposeForm(initial=initial, senders=choices)
        return render(request, "mailboxes/compose.html", context)

    limit = settings.COMPOSE_MAX_ATTACHMENT_BYTES + 2 * 1024 * 1024
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
        # The body was not kept (attachments stay in memory up to the limit only).
        form = ComposeForm(senders=choices, initial={"de": str(grant.mailbox.public_id)})
        form.add_error(None, attachments_too_large(int(request.META["CONTENT_LENGTH"])))
        context["form"] = form
        return render(request, "mailboxes/compose.html", context, status=413)
    if request.POST.get("de"):
        # A BAL the person reads but may not write from: 403 with the reason, not a form error.
        access_mailbox(user, request.POST["de"], Access.SEND, among=grants)
    form = ComposeForm(request.POST, request.FILES, senders=choices)
    context["form"] = form
    if request.POST.get("en_reponse_a"):  # shown again after an error: still a reply
        context["heading"] = "Répondre"
    elif request.POST.get("transfert"):
        context["heading"] = "Transférer"
    if not form.is_valid():
        return render(request, "mailboxes/compose.html", context, status=400)
    data = form.cleaned_data
    sender = next(g for g in senders if str(g.mailbox.public_id) == data["de"])
    attachments = [
        Attachment(
            safe_filename(f.name or ""), guess_type(f.name or "", f.content_type or ""), f.read()
        )
        for f in data["pieces"]
    ]
    if data["transfert"]:
        attachments += _forwarded(
            grant, user, request, data["transfert"], inline=data["transfert_texte"]
        )
    kept: DraftDocument | None = None
    if data["brouillon_uid"]:  # a resumed draft keeps its attachments and health document
        saved = draft_open(
            grant=grant, actor=user, uid=data["brouillon_uid"], purpose="send", request=request
        )
        attachments += saved.attachments
        kept = saved.document if data["doc_du_brouillon"] else None
    if data["doc_du_brouillon"] and kept is None and not data["doc_pdf"]:
        form.add_error(
            "doc_pdf",
            "Le document de santé du brouillon est introuvable : joignez de nouveau le PDF.",
        )
        return render(request, "mailboxes/compose.html", context, status=400)
    kept_document = _kept_document(form, data, kept)
    draft = Draft(
        to=data["a"],
        cc=data["cc"],
        bcc=data["cci"],
        subject=data["objet"],
        body=data["corps"],
        attachments=attachments,
        delivery_receipt=data["accuse_remise"],
        read_receipt=data["accuse_lecture"],
        block_reply=data["bloquer_reponse"],
        in_reply_to=data["en_reponse_a"],
        references=data["references"],
        patient_confirmed=data["confirmation_patient"],
        document=_document_request(data, kept_document) if data["action"] != "brouillon" else None,
        kept_document=kept_document,
    )
    if data["action"] == "brouillon" and request.headers.get(AUTOSAVE_HEADER):
        return _autosave(request, sender, user, draft, data["brouillon"])
    if data["action"] == "brouillon":
        return _save_draft(request, sender, user, draft, data["brouillon"], form, context)
    try:
        message_send(grant=sender, actor=user, draft=draft, request=request)
    except RecipientsRefused as exc:
        context["refused"] = [v for v in exc.verdicts if not v.ok]
        form.add_error(None, exc.user_message)
    except PatientConfirmationRequired as exc:
        context["patients"] = [v for v in recipients_review(draft.recipients) if v.patient]
        form.add_error(None, exc.user_message)
    except (MessageTooLarge, HealthDocumentRefused) as exc:
        form.add_error(None, exc.user_message)
    else:
        if data["brouillon"]:
            draft_discard(grant=sender, token=data["brouillon"])
        messages.success(request, "Message envoyé.")
        target = reverse("mailboxes:folder", args=[sender.mailbox.public_id])
        return redirect(f"{target}?{urlencode({'dossier': SENT})}")
    if draft.attachments or draft.kept_document:
        _keep_attachments(request, sender, user, draft, data["brouillon"], form, context)
    return render(request, "mailboxes/compose.html", context, status=400)


def _kept_document(
    form: ComposeForm, data: dict[str, Any], kept: DraftDocument | None
) -> DraftDocument | None:
    """The health document as a draft keeps it: the PDF given now, else the one the resumed
    draft holds, with the fields as typed."""
    upload = data.get("doc_pdf")
    if upload:
        pdf, name = upload.read(), safe_filename(upload.name or "document.pdf")
        upload.seek(0)
    elif kept is not None:
        pdf, name = kept.pdf, kept.pdf_name
    else:
        return None
    fields = {k: str(form.data.get(k, ""))[:100] for k in DOCUMENT_FIELDS}
    return DraftDocument(pdf, name, fields)


def _document_request(data: dict[str, Any], kept: DraftDocument | None) -> DocumentRequest | None:
    """« Joindre un document de santé », when a PDF was given or kept by the draft (the form
    checked the rest)."""
    if kept is None:
        return None
    patient = PatientIdentity(
        ins=data["doc_ins"],
        family=data["doc_nom"].strip(),
        given=data["doc_prenom"].strip(),
        birth_date=data["doc_naissance"],
        sex=data["doc_sexe"],
        qualified=data["doc_qualifiee"],
        # Outside production the INS are test identities (the ANS test NIR OID).
        test_identity=settings.PORTAL_ENV != "production" or settings.PORTAL_DEMO,
    )
    return DocumentRequest(
        pdf=kept.pdf,
        patient=patient,
        type_code=data["doc_type"],
        act_date=data["doc_date_acte"],
    )


def _keep_attachments(
    request: HttpRequest,
    sender: Grant,
    user: User,
    draft: Draft,
    token: str,
    form: ComposeForm,
    context: dict[str, Any],
) -> None:
    """A refused send keeps its attachments and its health document: the message is saved as
    its draft (a browser cannot refill a file field) and the page resumes from that draft,
    attachments and document listed."""
    try:
        uid = draft_save(grant=sender, actor=user, draft=draft, token=token, request=request)
    except (PortalError, HeaderRefused, Http404):  # busy, store down, an unwritable address
        context["attachments_lost"] = True
        return
    assert isinstance(form.data, QueryDict)  # a bound POST form
    data = form.data.copy()
    data["brouillon_uid"] = str(uid)
    data["transfert"] = ""  # the forwarded message is now one of the draft's attachments
    if draft.kept_document is not None:
        data["doc_du_brouillon"] = "on"  # its PDF is now the draft's
        context["draft_document"] = draft.kept_document
    form.data = data
    context["draft_attachments"] = draft.attachments


def _autosave(
    request: HttpRequest, sender: Grant, user: User, draft: Draft, token: str
) -> HttpResponse:
    """compose.js saving the message being written (every few seconds, and on leaving): the
    new draft's UID as JSON, for the next save and the send to refer to."""
    if not token:
        return JsonResponse({"erreur": "Brouillon sans identifiant."}, status=400)
    try:
        uid = draft_save(grant=sender, actor=user, draft=draft, token=token, request=request)
    except DraftBusy as exc:
        return JsonResponse({"erreur": exc.user_message}, status=409)
    return JsonResponse({"uid": uid})


def _save_draft(
    request: HttpRequest,
    sender: Grant,
    user: User,
    draft: Draft,
    token: str,
    form: ComposeForm,
    context: dict[str, Any],
) -> HttpResponse:
    if not token:
        form.add_error(None, "Brouillon sans identifiant : rechargez la page.")
        return render(request, "mailboxes/compose.html", context, status=400)
    try:
        uid = draft_save(grant=sender, actor=user, draft=draft, token=token, request=request)
    except DraftBusy as exc:
        form.add_error(None, exc.user_message)
        return render(request, "mailboxes/compose.html", context, status=409)
    messages.success(request, "Brouillon enregistré dans le dossier Brouillons.")
    target = reverse("mailboxes:compose", args=[sender.mailbox.public_id])
    return redirect(f"{target}?{urlencode({'brouillon': uid})}")


@professional_required
@require_GET
@rate_limited(ANNUAIRE_SUGGEST)
def recipient_suggest(request: HttpRequest) -> HttpResponse:
    """htmx fragment for « Ajouter un destinataire »: recent correspondents of the BALs the
    person may send from, then the national directory; 10 at most."""
    senders = _senders(usable_mailboxes(_user(request)))
    if not senders:
        raise Http404
    text = request.GET.get("q", "").strip()[:100]
    recent = recent_correspondents(senders, text) if len(text) >= 2 else []
    known = directory_entries(recent)
    suggestions = [
        Suggestion(
            address,
            known[address].label if address in known else address,
            "Correspondant récent",
            known[address].bal_type if address in known else "",
        )
        for address in recent
    ]
    suggestions += [s for s in directory_suggest(text) if s.address not in recent]
    return HttpResponse(suggestions_html(suggestions[:10], text))


@professional_required
@require_GET
def compose_to(request: HttpRequest) -> HttpResponse:
    """« Écrire » from the annuaire: the compose page of the person's own BAL (else the first
    BAL they may send from), addressed to ``?a=``."""
    user = _user(request)
    senders = _senders(usable_mailboxes(user))
    if not senders:
        raise RightMissing("Vous n'avez aucune boîte aux lettres depuis laquelle écrire.")
    own = [g for g in senders if g.mailbox.owner_id == user.pk]
    grant = (own or senders)[0]
    target = reverse("mailboxes:compose", args=[grant.mailbox.public_id])
    return redirect(f"{target}?{urlencode({'a': request.GET.get('a', '')[:2000]})}")


@professional_required
@require_GET
def recipients_check(request: HttpRequest) -> HttpResponse:
    """htmx fragment: each address typed so far with its verdict, and the summary decoded from
    each patient's INS to confirm before sending."""
    if not _senders(usable_mailboxes(_user(request))):
        raise Http404
    typed = ",".join(request.GET.get(k, "")[:20_000] for k in ("a", "cc", "cci"))
    patients = [f"{ins}@{PATIENT_DOMAIN}" for ins in typed_ins(request.GET.get("ins", "")[:2000])]
    addresses = (split_addresses(typed) + patients)[: settings.COMPOSE_MAX_RECIPIENTS]
    verdicts = recipients_review(addresses)
    return render(
        request,
        "mailboxes/_recipients.html",
        {
            "verdicts": verdicts,
            "patients": [v for v in verdicts if v.patient],
            "confirmed": request.GET.get("confirmation_patient") == "on",
        },
    )


@professional_required
@require_http_methods(["GET", "POST"])
def signature(request: HttpRequest, public_id: str) -> HttpResponse:
    """« Ma signature »: the signed-in person's signature for this BAL (a BAL they may send
    from); each colleague of a team BAL has their own."""
    user = _user(request)
    grant = access_mailbox(user, public_id, Access.SEND)
    form = SignatureForm(
        request.POST or None, initial={"texte": signature_text(grant=grant, actor=user)}
    )
    if request.method == "POST" and form.is_valid():
        signature_set(grant=grant, actor=user, text=form.cleaned_data["texte"])
        messages.success(request, "Signature enregistrée.")
        return redirect(reverse("mailboxes:compose", args=[grant.mailbox.public_id]))
    context = {"form": form, "mailbox": grant.mailbox, "grant": grant}
    return render(request, "mailboxes/signature.html", context, status=400 if form.errors else 200)
