"""The console's people: who belongs to the structure, directors, invitations, the recovery
key; and, on the webmail side, the delegations a holder grants on their own PER BAL."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import professional_required, recent_auth_required
from accounts.models import Membership, User
from mailboxes.access import owned_mailbox
from mailboxes.console.forms import AccessForm, InviteForm, RecoveryKeyForm, RoleForm, set_choices
from mailboxes.console.selectors import (
    console_access,
    console_structure,
    mailbox_people,
    structure_membership,
    structure_people,
    structure_person,
)
from mailboxes.console.services import people
from mailboxes.console.services.recovery_key import recovery_key_set
from mailboxes.models import Mailbox


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@professional_required
@require_http_methods(["GET", "POST"])
def people_list(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponse:
    """Everyone of the structure; invite a professional by national id."""
    current = console_structure(_user(request), structure_id)
    form = InviteForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                membership = people.professional_invite(
                    structure=current,
                    national_id=form.cleaned_data["national_id"],
                    actor=_user(request),
                    request=request,
                )
            except ValidationError as exc:
                form.add_error("national_id", " ".join(exc.messages))
                status = 400
            else:
                name = membership.user.display_name
                messages.success(
                    request,
                    f"{name} fait maintenant partie de la structure ; il ou elle se connecte "
                    "avec Pro Santé Connect.",
                )
                return redirect("console:people", current.public_id)
        else:
            status = 400
    holders = set(
        Mailbox.objects.filter(structure=current, kind=Mailbox.Kind.PER)
        .exclude(status=Mailbox.Status.CLOSED)
        .values_list("owner_id", flat=True)
    )
    return render(
        request,
        "console/people.html",
        {
            "structure": current,
            "rows": structure_people(current),
            "holders": holders,
            "form": form,
            "me": _user(request),
        },
        status=status,
    )


@professional_required
@require_POST
@recent_auth_required
def person_role(
    request: HttpRequest, structure_id: uuid.UUID, membership_id: uuid.UUID
) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    membership = structure_membership(current, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Rôle inconnu.")
        return redirect("console:people", current.public_id)
    role = form.cleaned_data["role"]
    try:
        people.role_set(membership=membership, role=role, actor=_user(request), request=request)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("console:people", current.public_id)
    label = "directeur·rice" if role == Membership.Role.DIRECTOR else "membre"
    messages.success(request, f"{membership.user.display_name} est maintenant {label}.")
    if membership.user_id == _user(request).pk and role != Membership.Role.DIRECTOR:
        return redirect("accounts:home")  # they just left the console
    return redirect("console:people", current.public_id)


@professional_required
@require_POST
def person_remove(
    request: HttpRequest, structure_id: uuid.UUID, membership_id: uuid.UUID
) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    membership = structure_membership(current, membership_id)
    try:
        people.membership_remove(membership=membership, actor=_user(request), request=request)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, f"{membership.user.display_name} ne fait plus partie de la structure."
        )
    return redirect("console:people", current.public_id)


@professional_required
@require_http_methods(["GET", "POST"])
def recovery_key(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponse:
    """The structure's OpenPGP public key that BAL exports are encrypted to."""
    current = console_structure(_user(request), structure_id)
    form = RecoveryKeyForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                recovery_key_set(
                    structure=current,
                    armored=form.cleaned_data["armored"],
                    actor=_user(request),
                    request=request,
                )
            except ValidationError as exc:
                form.add_error(None, " ".join(exc.messages))
                status = 400
            else:
                messages.success(request, "La clé de recouvrement est enregistrée.")
                return redirect("console:recovery_key", current.public_id)
        else:
            status = 400
    return render(
        request, "console/recovery_key.html", {"structure": current, "form": form}, status=status
    )


# --- Delegations of a PER BAL, granted by its holder (webmail side) -------------------------


@professional_required
@require_GET
def delegations(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    box = owned_mailbox(_user(request), public_id)
    form = AccessForm()
    set_choices(form, "person", _colleagues(box, _user(request)))
    set_choices(form, "rights", [("read", "Lecture"), ("send", "Lecture et envoi")])
    return render(
        request,
        "mailboxes/delegations.html",
        {"box": box, "people": mailbox_people(box), "form": form},
    )


def _colleagues(box: Mailbox, me: User) -> list[tuple[str, str]]:
    return [
        (str(m.user.public_id), f"{m.user.display_name} ({m.user.national_id})")
        for m in structure_people(box.structure)
        if m.user_id != me.pk and m.user.national_id
    ]


@professional_required
@require_POST
@recent_auth_required
def delegation_grant(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    box = owned_mailbox(_user(request), public_id)
    form = AccessForm(request.POST)
    set_choices(form, "person", _colleagues(box, _user(request)))
    back = reverse("mailboxes:delegations", args=[box.public_id])
    if not form.is_valid() or form.cleaned_data["rights"] == "manage":
        messages.error(request, "Choisissez une personne de la structure et ses droits.")
        return redirect(back)
    user = structure_person(box.structure, form.cleaned_data["person"])
    try:
        people.access_set(
            mailbox=box,
            user=user,
            can_send=form.cleaned_data["rights"] == "send",
            expires_at=form.expires_at(),
            actor=_user(request),
            request=request,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{user.display_name} peut maintenant utiliser votre BAL.")
    return redirect(back)


@professional_required
@require_POST
def delegation_revoke(
    request: HttpRequest, public_id: uuid.UUID, access_id: uuid.UUID
) -> HttpResponse:
    box = owned_mailbox(_user(request), public_id)
    access = console_access(box, access_id)
    people.access_revoke(access=access, actor=_user(request), request=request)
    messages.success(request, f"La délégation de {access.user.display_name} est retirée.")
    return redirect("mailboxes:delegations", box.public_id)
