"""Webmail, organising: the BAL's folders of its own, « Annuler » after the Trash, emptying
the Trash after a confirmation. Each view: parse (a form) -> access (a selector) -> one
service -> render, like views.reading, whose helpers they share."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_POST

from accounts.decorators import professional_required
from mailboxes.access import Access, Grant, access_mailbox, require
from mailboxes.errors import FolderExists, FolderNameInvalid, FolderNotEmpty, FolderProtected
from mailboxes.store.imap import SPECIAL_FOLDERS, TRASH
from mailboxes.webmail.forms import FolderChange, RestoreRequest
from mailboxes.webmail.selectors import folders_of
from mailboxes.webmail.services import folders as folders_svc
from mailboxes.webmail.services import messages as svc
from mailboxes.webmail.views.reading import UNDO_KEY, _folder_url, _user


@professional_required
@require_POST
def restore(request: HttpRequest, public_id: str) -> HttpResponse:
    """« Annuler »: the messages just placed in the Trash go back where they were."""
    grant = access_mailbox(_user(request), public_id)
    form = RestoreRequest(request.POST)
    undo = request.session.get(UNDO_KEY)
    if (
        not form.is_valid()
        or not isinstance(undo, dict)
        or undo.get("bal") != str(grant.mailbox.public_id)
        or undo.get("token") != form.cleaned_data["jeton"]
    ):
        messages.error(request, "Cette suppression ne peut plus être annulée.")
        return redirect(_folder_url(grant.mailbox.public_id, TRASH))
    origin = str(undo["folder"])
    count = svc.messages_restore(
        grant=grant,
        actor=_user(request),
        message_ids=[str(i) for i in undo.get("ids", [])],
        target=origin,
        request=request,
    )
    del request.session[UNDO_KEY]
    label = SPECIAL_FOLDERS.get(origin, origin)
    messages.success(
        request,
        ngettext(
            "%(n)d message remis dans « %(folder)s ».",
            "%(n)d messages remis dans « %(folder)s ».",
            count,
        )
        % {"n": count, "folder": label},
    )
    back = request.POST.get("suivant", "")
    if back.startswith(reverse("mailboxes:folder", args=[grant.mailbox.public_id])):
        return redirect(back)
    return redirect(_folder_url(grant.mailbox.public_id, origin))


@professional_required
@require_http_methods(["GET", "POST"])
def empty_trash(request: HttpRequest, public_id: str) -> HttpResponse:
    """GET: the confirmation page (« Vider la corbeille ? N messages… »); POST: empty it."""
    grant = access_mailbox(_user(request), public_id)
    if request.method == "GET":
        require(grant, Access.MANAGE)
        trash = next((f for f in folders_of(grant) if f.name == TRASH), None)
        return render(
            request,
            "mailboxes/empty_trash.html",
            {
                "grant": grant,
                "mailbox": grant.mailbox,
                "total": trash.total if trash else 0,
                "back": _folder_url(grant.mailbox.public_id, TRASH),
            },
        )
    count = svc.trash_empty(grant=grant, actor=_user(request), request=request)
    messages.success(
        request,
        ngettext(
            "Corbeille vidée : %(n)d message supprimé définitivement.",
            "Corbeille vidée : %(n)d messages supprimés définitivement.",
            count,
        )
        % {"n": count},
    )
    return redirect(_folder_url(grant.mailbox.public_id, TRASH))


@professional_required
@require_http_methods(["GET", "POST"])
def folders_manage(request: HttpRequest, public_id: str) -> HttpResponse:
    """The BAL's folders: create one, rename or delete (when empty) one of its own."""
    grant = access_mailbox(_user(request), public_id)
    if request.method == "POST":
        form = FolderChange(request.POST)
        form.refuse_control_characters()
        if form.is_valid():
            d = form.cleaned_data
            try:
                _folder_change(request, grant, d["action"], d["dossier"], d["nom"])
            except (FolderNameInvalid, FolderExists, FolderNotEmpty, FolderProtected) as exc:
                messages.error(request, exc.user_message)
            else:
                return redirect(reverse("mailboxes:folders_manage", args=[grant.mailbox.public_id]))
        else:
            for errors in form.errors.values():
                messages.error(request, " ".join(str(e) for e in errors))
    folders = folders_of(grant)
    return render(
        request,
        "mailboxes/folders_manage.html",
        {
            "grant": grant,
            "mailbox": grant.mailbox,
            "own": [f for f in folders if not f.special],
            "special": [f for f in folders if f.special],
            "back": _folder_url(grant.mailbox.public_id, "INBOX"),
        },
    )


def _folder_change(
    request: HttpRequest, grant: Grant, action: str, folder_name: str, name: str
) -> None:
    user = _user(request)
    if action == "creer":
        created = folders_svc.folder_create(grant=grant, actor=user, name=name, request=request)
        messages.success(request, f"Dossier « {created} » créé.")
    elif action == "renommer":
        renamed = folders_svc.folder_rename(
            grant=grant, actor=user, folder=folder_name, name=name, request=request
        )
        messages.success(request, f"Dossier « {folder_name} » renommé en « {renamed} ».")
    else:
        folders_svc.folder_delete(grant=grant, actor=user, folder=folder_name, request=request)
        messages.success(request, f"Dossier « {folder_name} » supprimé.")
