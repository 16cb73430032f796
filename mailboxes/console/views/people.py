"""The console's people: who belongs to the structure, directors, invitations, the recovery
key; and, on the webmail side, the delegations a holder grants on their own PER BAL (and the
members a manager of an ORG/APP BAL sets)."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import (
    auth_is_recent,
    professional_required,
    reauthenticate,
    recent_auth_required,
)
from accounts.models import Membership, Structure, User
from mailboxes.access import Access, access_mailbox
from mailboxes.console.forms import (
    AccessForm,
    InviteForm,
    RecoveryKeyForm,
    RoleForm,
    SectorForm,
    rights_choices,
    set_choices,
)
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
from mailboxes.console.services.sector import structure_sector_set
from mailboxes.console.views.confirm import replace_confirmation
from mailboxes.documents.codes import FACILITY_TYPES, practice_setting_of, sector_of
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
                lookup = people.invite_lookup(form.cleaned_data["national_id"])
                if lookup.choices or not (lookup.known or form.cleaned_data["anyway"]):
                    return _people_page(request, current, form, lookup=lookup)
                membership = people.professional_invite(
                    structure=current,
                    national_id=lookup.national_id,
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
    return _people_page(request, current, form, status=status)


def _people_page(
    request: HttpRequest,
    current: Structure,
    form: InviteForm,
    *,
    lookup: people.InviteLookup | None = None,
    status: int = 200,
) -> HttpResponse:
    """The people of the structure and the invitation form; with ``lookup``, the choice
    between several professionals of that name, or the warning about an identifier the
    annuaire does not know."""
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
            "lookup": lookup,
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
@recent_auth_required
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
    """The structure's OpenPGP public key that BAL exports are encrypted to. The page opens
    to any director; setting or replacing the key is a sensitive action."""
    current = console_structure(_user(request), structure_id)
    if request.method == "POST" and not auth_is_recent(request):
        return reauthenticate(request)
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


@professional_required
@require_http_methods(["GET", "POST"])
def sector(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponse:
    """« Documents de santé »: the structure's type, named in the documents it sends."""
    current = console_structure(_user(request), structure_id)
    code, source = sector_of(current)
    initial = {"secteur": current.facility_type_code or (code if source == "annuaire" else "")}
    form = SectorForm(request.POST or None, initial=initial)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            structure_sector_set(
                structure=current,
                code=form.cleaned_data["secteur"],
                actor=_user(request),
                request=request,
            )
            messages.success(request, "Le type de structure est enregistré.")
            return redirect("console:sector", current.public_id)
        status = 400
    context = {
        "structure": current,
        "form": form,
        "sector": (code, FACILITY_TYPES[code]),
        "source": source,
        "setting": practice_setting_of(code),
    }
    return render(request, "console/sector.html", context, status=status)


# --- Delegations of a BAL, on the webmail side: a PER BAL's holder, an ORG/APP BAL's managers --


def _rights_form(box: Mailbox, me: User, data: object = None) -> AccessForm:
    form = AccessForm(data)  # type: ignore[arg-type]
    set_choices(form, "person", _colleagues(box, me))
    set_choices(form, "rights", rights_choices(manage=box.kind != Mailbox.Kind.PER))
    return form


@professional_required
@require_GET
def delegations(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """Who can use the BAL, with which rights and until when (MANAGE)."""
    box = access_mailbox(_user(request), public_id, Access.MANAGE).mailbox
    return render(
        request,
        "mailboxes/delegations.html",
        {"box": box, "people": mailbox_people(box), "form": _rights_form(box, _user(request))},
    )


def _colleagues(box: Mailbox, me: User) -> list[tuple[str, str]]:
    """The structure's people one may give rights to: never oneself, never the holder."""
    return [
        (str(m.user.public_id), f"{m.user.display_name} ({m.user.national_id})")
        for m in structure_people(box.structure)
        if m.user_id not in (me.pk, box.owner_id) and m.user.national_id
    ]


@professional_required
@require_POST
@recent_auth_required
def delegation_grant(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    box = access_mailbox(_user(request), public_id, Access.MANAGE).mailbox
    form = _rights_form(box, _user(request), request.POST)
    back = reverse("mailboxes:delegations", args=[box.public_id])
    if not form.is_valid():
        messages.error(request, "Choisissez une personne de la structure et ses droits.")
        return redirect(back)
    user = structure_person(box.structure, form.cleaned_data["person"])
    ask = replace_confirmation(request, box=box, user=user, form=form, back=back)
    if ask is not None:
        return ask
    try:
        people.access_set(
            mailbox=box,
            user=user,
            **form.chosen_rights(),
            expires_at=form.expires_at(),
            actor=_user(request),
            request=request,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{user.display_name} peut maintenant utiliser cette BAL.")
    return redirect(back)


@professional_required
@require_POST
def delegation_revoke(
    request: HttpRequest, public_id: uuid.UUID, access_id: uuid.UUID
) -> HttpResponse:
    box = access_mailbox(_user(request), public_id, Access.MANAGE).mailbox
    access = console_access(box, access_id)
    people.access_revoke(access=access, actor=_user(request), request=request)
    messages.success(request, f"L'accès de {access.user.display_name} est retiré.")
    return redirect("mailboxes:delegations", box.public_id)
