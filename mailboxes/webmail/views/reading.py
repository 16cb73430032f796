"""Webmail, reading side. Each view: parse (a form) -> access (a selector) -> one service ->
render. htmx requests get the fragment; full requests get the page (works without JS)."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.utils.translation import ngettext
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import professional_required
from accounts.models import User
from accounts.selectors import administers
from mailboxes.access import Access, Grant, access_mailbox, usable_mailboxes
from mailboxes.documents.xdm import is_xdm_archive
from mailboxes.errors import (
    HandoverUnavailable,
    StoreUnavailable,
)
from mailboxes.models import Mailbox
from mailboxes.store.imap import IMAP_ERRORS, SENT, TRASH, Criteria, MailStore, Summary
from mailboxes.store.mime import display_subject
from mailboxes.webmail.forms import (
    SEARCH_PARAMS,
    ArrivalsQuery,
    FolderQuery,
    HandoverStep,
    MessageQuery,
    MessagesAction,
    ReceiptAnswer,
)
from mailboxes.webmail.presenters import failure_reason, handling_text, preview_type, rows
from mailboxes.webmail.sanitize import sanitize
from mailboxes.webmail.selectors import (
    TEAM_KINDS,
    Neighbours,
    delivery_statuses,
    folder_arrivals,
    handlings_of,
    list_neighbours,
    openers_of,
    quota_warning,
    sent_statuses,
    taken_by,
    unread_counts,
)
from mailboxes.webmail.services import messages as svc
from mailboxes.webmail.services.documents import documents_of
from mailboxes.webmail.services.receipts import (
    ReceiptAlreadySettled,
    ReceiptImpossible,
    receipt_answer,
)

SAFE_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # login_required ran first
    return request.user


def _folder_url(public_id: object, folder: str, **extra: object) -> str:
    query = urlencode({"dossier": folder, **{k: v for k, v in extra.items() if v}})
    return f"{reverse('mailboxes:folder', args=[public_id])}?{query}"


@professional_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """Every BAL the person may use, with its unread count."""
    rows = unread_counts(usable_mailboxes(_user(request)))
    return render(request, "mailboxes/index.html", {"rows": rows})


@professional_required
@require_GET
def switcher(request: HttpRequest) -> HttpResponse:
    """htmx fragment: the BAL switcher with unread counts (loaded after the page)."""
    rows = unread_counts(usable_mailboxes(_user(request)))
    return render(
        request,
        "mailboxes/_switcher_counts.html",
        {"rows": rows, "current": request.GET.get("bal", "")},
    )


# Column -> (the first order a click asks for, the other one), French URL values (forms.ORDERS).
SORT_COLUMNS = {
    "sender": ("expediteur", "expediteur-inverse"),
    "subject": ("objet", "objet-inverse"),
    "date": ("date", "date-croissante"),
    "size": ("taille", "taille-croissante"),
}
ASCENDING = {"expediteur", "objet", "date-croissante", "taille-croissante"}


def _sort_columns(
    base: str, params: dict[str, str], *, threaded: bool = False
) -> dict[str, dict[str, str]]:
    """Each column header's link (a click sorts by it, a second click the other way) and its
    aria-sort (WAI-ARIA 1.2: on the header of the column the rows are sorted by only). The
    conversation view has its own order: a click there goes back to the message view."""
    current = "" if threaded else params.get("tri") or "reception"
    kept = {k: v for k, v in params.items() if k not in ("tri", "page", "vue")}
    columns = {}
    for column, (first, other) in SORT_COLUMNS.items():
        mine = current in (first, other) or (column == "date" and current == "reception")
        shown = "date" if current == "reception" else current
        wanted = other if mine and shown == first else first
        state = ""
        if mine:
            state = "ascending" if shown in ASCENDING else "descending"
        columns[column] = {
            "url": f"{base}&{urlencode({**kept, 'tri': wanted})}",
            "aria_sort": state,
            "arrow": {"ascending": "▲", "descending": "▼"}.get(state, ""),
        }
    return columns


UNDO_KEY = "webmail_undo"


def _undo_offer(request: HttpRequest, mailbox: Mailbox) -> dict[str, object] | None:
    """The « Annuler » of the last « placés dans la corbeille », shown once on the next list."""
    undo = request.session.get(UNDO_KEY)
    if not isinstance(undo, dict) or undo.get("bal") != str(mailbox.public_id):
        return None
    if undo.get("shown"):
        return None
    request.session[UNDO_KEY] = {**undo, "shown": True}
    return undo


@professional_required
@require_GET
def folder(request: HttpRequest, public_id: str) -> HttpResponse:
    grants = usable_mailboxes(_user(request))
    grant = access_mailbox(_user(request), public_id, among=grants)
    query = FolderQuery(request.GET)
    query.refuse_control_characters()
    if not query.is_valid() and not query.errors.keys() <= {"du", "au", "page", "tri"}:
        return HttpResponseBadRequest("Paramètres de recherche invalides.")
    team = grant.mailbox.kind in TEAM_KINDS
    handover = query.cleaned_data.get("suivi", "") if team and query.is_valid() else ""
    mine = taken_by(grant.mailbox, _user(request)) if handover == "moi" else ()
    criteria = query.criteria(mine)
    everywhere = query.everywhere and not criteria.is_empty()
    threaded = query.threaded
    folders, page = svc.folder_open(
        grant=grant,
        actor=_user(request),
        folder=query.folder,
        page=query.page_number,
        criteria=criteria,
        order=query.order,
        everywhere=everywhere,
        threaded=threaded,
        request=request,
    )
    ids = [m.message_id for m in page.messages]
    handlings = handlings_of(grant.mailbox, ids) if team else {}
    # Sent: the delivery states (in a search in every folder, rows of other folders have none).
    deliveries = sent_statuses(grant.mailbox, ids) if page.folder == SENT else {}
    params = query.list_params()
    params["page"] = str(page.number) if page.number > 1 else ""
    params = {k: v for k, v in params.items() if v}
    search = {k: v for k, v in params.items() if k in SEARCH_PARAMS}
    base = _folder_url(grant.mailbox.public_id, page.folder)
    labels = {f.name: f.label for f in folders} if everywhere else None
    context = {
        "team": team,
        "handover": handover,
        "grant": grant,
        "mailbox": grant.mailbox,
        "folders": folders,
        "current_folder": next((f for f in folders if f.name == page.folder), None),
        "page": page,
        "rows": rows(
            page,
            grant.mailbox.public_id,
            handlings,
            deliveries,
            list_qs=urlencode(params),
            labels=labels,
        ),
        "is_sent": page.folder == SENT and not everywhere,
        "query": query,
        "grants": grants,
        # What the pager's links keep (all but the page).
        "search_qs": urlencode({k: v for k, v in params.items() if k != "page"}),
        "searching": bool(search),
        "everywhere": everywhere,
        "threaded": threaded,
        "view_toggle": _folder_url(
            grant.mailbox.public_id,
            page.folder,
            **{k: v for k, v in params.items() if k not in ("vue", "page", "tri")},
            **({} if threaded else {"vue": "conversations"}),
        ),
        "advanced_open": any(k in search for k in ("de", "objet", "texte", "du", "au")),
        "sort": _sort_columns(base, params, threaded=threaded),
        "here": f"{base}&{urlencode(params)}" if params else base,
        "undo": _undo_offer(request, grant.mailbox),
        "is_trash": page.folder == TRASH,
        "poll_seconds": settings.WEBMAIL_POLL_SECONDS,
        "quota_warning": None if request.htmx else quota_warning(grant.mailbox),  # type: ignore[attr-defined]
        # Selecting messages is only offered to who may act on them here (Access); not on a
        # search in every folder, whose rows are in several folders (open one to act on it).
        "can_act": not everywhere
        and (
            grant.allows(Access.ORGANISE) or (page.folder == TRASH and grant.allows(Access.MANAGE))
        ),
    }
    template = "mailboxes/_message_list.html" if request.htmx else "mailboxes/folder.html"  # type: ignore[attr-defined]
    return render(request, template, context)


@professional_required
@require_GET
def arrivals(request: HttpRequest, public_id: str) -> HttpResponse:
    """htmx polling of a folder page: 204 (nothing to swap) until mail arrives, then the
    banner « N nouveaux messages » and the tab title with the unread count."""
    grant = access_mailbox(_user(request), public_id)
    query = ArrivalsQuery(request.GET)
    if not query.is_valid():
        return HttpResponseBadRequest("Paramètres invalides.")
    folder_name, since = query.cleaned_data["dossier"], query.cleaned_data["depuis"]
    if since is None:
        return HttpResponse(status=204)  # no page to compare with: nothing to announce
    try:
        news = folder_arrivals(grant, folder_name, since)
    except StoreUnavailable:
        return HttpResponse(status=204)  # the next poll tries again; the page stays as it is
    if news is None:
        raise Http404
    if not news.arrived:
        return HttpResponse(status=204)
    return render(
        request,
        "mailboxes/_arrivals.html",
        {
            "news": news,
            "mailbox": grant.mailbox,
            "reload": _folder_url(grant.mailbox.public_id, folder_name),
        },
    )


@professional_required
@require_GET
def message(request: HttpRequest, public_id: str, uid: int) -> HttpResponse:
    grant = access_mailbox(_user(request), public_id)
    query = MessageQuery(request.GET)
    query.refuse_control_characters()
    if not query.is_valid():
        raise Http404
    folder_name = query.cleaned_data["dossier"]
    list_query = FolderQuery(request.GET)
    near: list[Neighbours] = []

    def neighbours(store: MailStore) -> None:
        # The list the message was opened from, in the IMAP session that read it (one
        # login per page); without it, the page still shows the message.
        try:
            near.append(_neighbours(grant, folder_name, uid, list_query, store))
        except IMAP_ERRORS:
            pass
        except StoreUnavailable:
            pass

    raw, parsed, summary = svc.message_read(
        grant=grant, actor=_user(request), folder=folder_name, uid=uid, request=request,
        then=neighbours,
    )  # fmt: skip
    listing = _list_context(
        grant, folder_name, list_query, near[0] if near else Neighbours(None, None, 0, 0)
    )
    blocked = sanitize(parsed.html).blocked_remote if parsed.html else 0
    # The « Documents de santé » panel, only for a message that carries an IHE_XDM.ZIP.
    has_archive = any(is_xdm_archive(a.filename) for a in parsed.attachments)
    # One MIME parse per page: the panel reads the archive from the message parsed above.
    documents = documents_of(raw, parsed) if has_archive else None
    return render(
        request,
        "mailboxes/message.html",
        {
            "grant": grant,
            "mailbox": grant.mailbox,
            "folder": folder_name,
            "message": parsed,
            "subject": display_subject(parsed.subject),
            "documents": documents,
            "summary": summary,
            "uid": uid,
            "images": query.cleaned_data["images"],
            "blocked": blocked,
            **listing,
            "print_url": _message_url(grant.mailbox.public_id, uid, folder_name, "imprimer/"),
            "previews": {
                a.index: reverse(
                    "mailboxes:attachment_preview", args=[grant.mailbox.public_id, uid, a.index]
                )
                + "?"
                + urlencode({"dossier": folder_name})
                for a in parsed.attachments
                if preview_type(a.content_type)
            },
            # RFC 8098: never automatic; asked once per message, of who may send from the BAL.
            "ask_receipt": bool(parsed.wants_mdn)
            and not summary.mdn_sent
            and folder_name != SENT
            and grant.mailbox.status == Mailbox.Status.ACTIVE
            and grant.allows(Access.SEND),
            "deliveries": [
                (d, failure_reason(d.last_reply) if d.status == d.Status.FAILED else "")
                for d in delivery_statuses(grant.mailbox, parsed.message_id)
            ]
            if folder_name == SENT
            else [],
            "history_url": _history_url(_user(request), grant.mailbox, parsed.message_id),
            **_handover(grant.mailbox, summary, parsed.message_id),
        },
    )


def _message_url(public_id: object, uid: int, folder: str, tail: str = "", **extra: str) -> str:
    target = reverse("mailboxes:message", args=[public_id, uid]) + tail
    return f"{target}?{urlencode({'dossier': folder, **{k: v for k, v in extra.items() if v}})}"


def _neighbours(
    grant: Grant, folder: str, uid: int, query: FolderQuery, store: MailStore | None = None
) -> Neighbours:
    """The previous and next messages in the list the page came from (its query string:
    page, order, search), and the folders to move the message to."""
    criteria = query.criteria() if query.is_valid() else Criteria()
    return list_neighbours(
        grant, folder, uid, criteria=criteria, order=query.order,
        everywhere=query.everywhere, threaded=query.threaded,
        with_folders=grant.allows(Access.ORGANISE), store=store,
    )  # fmt: skip


def _list_context(
    grant: Grant, folder: str, query: FolderQuery, near: Neighbours
) -> dict[str, object]:
    """What the message page knows of the list it was opened from: « Retour à la liste » to
    that very page, the previous and next messages in its order (``near``), and the folders
    to move the message to."""
    params = query.list_params()
    public_id = grant.mailbox.public_id
    # The neighbour's page of the list: the position is known, so the page is too.
    per_page = 50

    def link(ref: tuple[str, int] | None, position: int) -> str:
        if ref is None:
            return ""
        page = (position - 1) // per_page + 1
        return _message_url(
            public_id, ref[1], ref[0], **{**params, "page": str(page) if page > 1 else ""}
        )

    return {
        "back": _folder_url(public_id, folder, **params),
        "previous_url": link(near.previous, near.position - 1),
        "next_url": link(near.next, near.position + 1),
        "position": near.position,
        "list_total": near.total,
        "move_targets": [f for f in near.folders if f.name != folder],
        "list_qs": urlencode(params),
    }


def _handover(mailbox: Mailbox, summary: Summary, message_id: str) -> dict[str, object]:
    """A team BAL's message page: who took it in charge, who opened it."""
    if mailbox.kind not in TEAM_KINDS:
        return {"team": False}
    handling = handlings_of(mailbox, [message_id]).get(message_id)
    return {
        "team": bool(message_id),
        "handling": handling,
        "handling_text": handling_text(handling),
        "openers": openers_of(mailbox, message_id),
    }


@professional_required
@require_POST
def handle(request: HttpRequest, public_id: str, uid: int) -> HttpResponse:
    """« Je m'en occupe », « Terminé », « Rendre » on a team BAL's message."""
    grant = access_mailbox(_user(request), public_id)
    form = HandoverStep(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Demande invalide.")
    folder_name, step = form.cleaned_data["dossier"], form.cleaned_data["etape"]
    try:
        svc.message_handle(
            grant=grant, actor=_user(request), folder=folder_name, uid=uid, step=step,
            request=request,
        )  # fmt: skip
    except HandoverUnavailable as exc:
        messages.error(request, exc.user_message)
    else:
        messages.success(request, HANDOVER_DONE[step])
    target = reverse("mailboxes:message", args=[grant.mailbox.public_id, uid])
    return redirect(f"{target}?{urlencode({'dossier': folder_name})}")


HANDOVER_DONE = {
    "prendre": "Vous avez pris ce message en charge : l'équipe le voit.",
    "terminer": "Message marqué comme terminé.",
    "rendre": "Le message est de nouveau à traiter.",
}


def _history_url(user: User, mailbox: Mailbox, message_id: str) -> str:
    """The message's history in the structure's journal, for those who may see that journal
    (``administered_structures``); empty for everyone else, and for a message without id."""
    if not message_id:
        return ""
    if not administers(user, mailbox.structure_id):
        return ""
    target = reverse("console:journal", args=[mailbox.structure.public_id])
    return f"{target}?{urlencode({'bal': str(mailbox.public_id), 'message_id': message_id})}"


BODY_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:{remote}; frame-ancestors 'self'; "
    "form-action 'none'; base-uri 'none'; sandbox allow-popups allow-popups-to-escape-sandbox"
)


@professional_required
@require_GET
@xframe_options_sameorigin
def message_body(request: HttpRequest, public_id: str, uid: int) -> HttpResponse:
    """The sanitised HTML body, for the sandboxed iframe of the message page. Its own CSP
    forbids scripts and any network except what « afficher les images » allows (https only)."""
    grant = access_mailbox(_user(request), public_id)
    query = MessageQuery(request.GET)
    query.refuse_control_characters()
    if not query.is_valid():
        raise Http404
    allow_remote = query.cleaned_data["images"]
    html = svc.message_body_open(
        grant=grant,
        actor=_user(request),
        folder=query.cleaned_data["dossier"],
        uid=uid,
        request=request,
    )
    if html is None:
        raise Http404
    response = render(
        request, "mailboxes/body.html", {"html": sanitize(html, allow_remote=allow_remote).html}
    )
    response["Content-Security-Policy"] = BODY_CSP.format(remote=" https:" if allow_remote else "")
    return response


@professional_required
@require_GET
def attachment(request: HttpRequest, public_id: str, uid: int, index: int) -> HttpResponse:
    grant = access_mailbox(_user(request), public_id)
    query = MessageQuery(request.GET)
    query.refuse_control_characters()
    if not query.is_valid():
        raise Http404
    meta, data = svc.attachment_open(
        grant=grant,
        actor=_user(request),
        folder=query.cleaned_data["dossier"],
        uid=uid,
        index=index,
        request=request,
    )
    ctype = (
        meta.content_type
        if SAFE_CONTENT_TYPE.match(meta.content_type)
        else "application/octet-stream"
    )
    response = HttpResponse(data, content_type=ctype)
    response["Content-Disposition"] = content_disposition_header(True, meta.filename)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


ACTION_FLAGS = {
    "lu": ("seen", True),
    "non-lu": ("seen", False),
    "suivi": ("flagged", True),
    "non-suivi": ("flagged", False),
}
DONE = {
    "lu": "Messages marqués comme lus.",
    "non-lu": "Messages marqués comme non lus.",
    "suivi": "Messages marqués pour suivi.",
    "non-suivi": "Suivi retiré.",
    "deplacer": "Messages déplacés.",
    "supprimer": "Messages supprimés définitivement.",
}


def _trashed(request: HttpRequest, mailbox: Mailbox, origin: str, removed: svc.Removed) -> None:
    """« 3 messages placés dans la corbeille », and the « Annuler » the next list offers
    (the session keeps which messages, by Message-ID, and where they came from)."""
    count = len(removed.uids)
    if not removed.message_ids:  # nothing « Annuler » could find again: the notice alone
        messages.success(
            request,
            ngettext(
                "%(n)d message placé dans la corbeille.",
                "%(n)d messages placés dans la corbeille.",
                count,
            )
            % {"n": count},
        )
    else:  # the next list says it, with « Annuler »
        request.session[UNDO_KEY] = {
            "bal": str(mailbox.public_id),
            "token": secrets.token_hex(16),
            "folder": origin,
            "ids": removed.message_ids[:500],
            "count": count,
        }


@professional_required
@require_POST
def act(request: HttpRequest, public_id: str) -> HttpResponse:
    grant = access_mailbox(_user(request), public_id)
    form = MessagesAction(request.POST)
    form.refuse_control_characters()
    back_folder = request.POST.get("dossier", "INBOX")[:200] or "INBOX"
    if not form.is_valid():
        for error in form.errors.values():
            messages.error(request, " ".join(str(e) for e in error))
        return redirect(_folder_url(grant.mailbox.public_id, back_folder))
    d = form.cleaned_data
    user = _user(request)
    if d["action"] in ACTION_FLAGS:
        flag, on = ACTION_FLAGS[d["action"]]
        svc.messages_flag(
            grant=grant,
            actor=user,
            folder=d["dossier"],
            uids=d["uids"],
            flag=flag,
            on=on,
            request=request,
        )
    elif d["action"] == "deplacer":
        svc.messages_move(
            grant=grant,
            actor=user,
            folder=d["dossier"],
            uids=d["uids"],
            target=d["cible"],
            request=request,
        )
    else:
        removed = svc.messages_delete(
            grant=grant, actor=user, folder=d["dossier"], uids=d["uids"], request=request
        )
        if d["dossier"] != TRASH:
            _trashed(request, grant.mailbox, d["dossier"], removed)
    if not (d["action"] == "supprimer" and d["dossier"] != TRASH):
        messages.success(request, DONE[d["action"]])
    next_url = d["suivant"]
    if next_url.startswith(reverse("mailboxes:folder", args=[grant.mailbox.public_id])):
        return redirect(next_url)
    return redirect(_folder_url(grant.mailbox.public_id, d["dossier"]))


@professional_required
@require_POST
def receipt(request: HttpRequest, public_id: str, uid: int) -> HttpResponse:
    """The answer to « L'expéditeur demande un accusé de lecture »."""
    grant = access_mailbox(_user(request), public_id)
    form = ReceiptAnswer(request.POST)
    form.refuse_control_characters()
    if not form.is_valid():
        raise Http404
    folder = form.cleaned_data["dossier"]
    send = form.cleaned_data["reponse"] == "envoyer"
    try:
        receipt_answer(
            grant=grant, actor=_user(request), folder=folder, uid=uid, send=send, request=request
        )
    except (ReceiptImpossible, ReceiptAlreadySettled) as exc:
        messages.error(request, exc.user_message)
    else:
        messages.success(
            request, "Accusé de lecture envoyé." if send else "Aucun accusé de lecture envoyé."
        )
    target = reverse("mailboxes:message", args=[grant.mailbox.public_id, uid])
    return redirect(f"{target}?{urlencode({'dossier': folder})}")
