"""The director's console: the structure's BALs, their lifecycle and their people.

Every view: the structure through ``console_structure`` (404 for anyone who does not direct
it, exactly like a structure that does not exist), parse a form, one service, render. Services
raise ValidationError with the French message shown on the page.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import professional_required, recent_auth_required
from accounts.models import Structure, User
from accounts.selectors import directed_structures
from annuaire.selectors import directory_last_import
from mailboxes.console.forms import (
    AccessForm,
    BalEditForm,
    ConfirmForm,
    NoticeForm,
    OrgCreateForm,
    PerCreateForm,
    StatusForm,
    set_choices,
)
from mailboxes.console.selectors import (
    console_access,
    console_mailbox,
    console_mailboxes,
    console_structure,
    console_structures,
    mailbox_people,
    professional_candidates,
    structure_people,
    structure_person,
)
from mailboxes.console.services import export as export_svc
from mailboxes.console.services import jobs, lifecycle, people
from mailboxes.console.services.naming import address_propose
from mailboxes.console.services.publication import publication_plan
from mailboxes.console.views.confirm import replace_confirmation
from mailboxes.errors import RecoveryKeyMissing
from mailboxes.models import Mailbox, MailboxExport, MailboxJob
from mailboxes.transport import quota
from mailboxes.transport.notices import notice_configure

KINDS = {"per": Mailbox.Kind.PER, "org": Mailbox.Kind.ORG, "app": Mailbox.Kind.APP}


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # professional_required ran first
    return request.user


def _errors(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def _bal_url(structure: Structure, mailbox: Mailbox) -> str:
    return reverse("console:bal", args=[structure.public_id, mailbox.public_id])


def _person_choices(structure: Structure) -> list[tuple[str, str]]:
    return [
        (str(m.user.public_id), f"{m.user.display_name} ({m.user.national_id})")
        for m in structure_people(structure)
        if m.user.national_id
    ]


@professional_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The structures the person administers; straight to the only one."""
    structures = console_structures(_user(request))
    if not structures:
        raise Http404
    if len(structures) == 1:
        return redirect("console:structure", structures[0].public_id)
    return render(request, "console/home.html", {"structures": structures})


@professional_required
@require_GET
def structure(request: HttpRequest, structure_id: uuid.UUID) -> HttpResponse:
    """The BALs of the structure, by kind, with state, people, last activity and size."""
    current = console_structure(_user(request), structure_id)
    kind = request.GET.get("type", "").upper()
    status = request.GET.get("etat", "")
    rows = console_mailboxes(
        current,
        kind=kind if kind in Mailbox.Kind.values else "",
        status=status if status in Mailbox.Status.values else "",
    )
    groups = [
        (label, [r for r in rows if r.mailbox.kind == value])
        for value, label in Mailbox.Kind.choices
    ]
    return render(
        request,
        "console/structure.html",
        {
            "structure": current,
            "groups": [g for g in groups if g[1]],
            "count": len(rows),
            "kind": kind,
            "status": status,
            "statuses": Mailbox.Status.choices,
            "kinds": Mailbox.Kind.choices,
        },
    )


def _domains(structure: Structure) -> list[str]:
    return list(structure.domains.order_by("domain").values_list("domain", flat=True))


@professional_required
@require_http_methods(["GET", "POST"])
def bal_create(request: HttpRequest, structure_id: uuid.UUID, kind: str) -> HttpResponse:
    """Create a BAL. PER: first find the professional (name or national id, in the structure
    or the national directory), then confirm the proposed address. ORG/APP: one form."""
    current = console_structure(_user(request), structure_id)
    if kind not in KINDS:
        raise Http404
    domains = _domains(current)
    if not domains:
        messages.error(
            request, "La structure n'a pas de domaine MSSanté : impossible de créer une BAL."
        )
        return redirect("console:structure", current.public_id)
    if KINDS[kind] == Mailbox.Kind.PER:
        return _per_create(request, current, domains)
    form = OrgCreateForm(request.POST or None, domains=domains)
    set_choices(form, "responsible", _person_choices(current))
    if request.method == "GET":
        suggested = "-noreply" if kind == "app" else ""
        form = OrgCreateForm(initial={"local_part": suggested}, domains=domains)
        set_choices(form, "responsible", _person_choices(current))
    elif form.is_valid():
        data = form.cleaned_data
        try:
            box = lifecycle.mailbox_create(
                structure=current,
                kind=KINDS[kind],
                local_part=data["local_part"],
                domain=current.domains.get(domain=data["domain"]),
                display_name=data["display_name"] or data["local_part"],
                responsible=structure_person(current, data["responsible"]),
                service=data["service"],
                description=data["description"],
                liste_rouge=data["liste_rouge"],
                actor=_user(request),
            )
        except ValidationError as exc:
            form.add_error(None, _errors(exc))
        else:
            messages.success(request, f"La BAL {box.address} est créée.")
            return redirect(_bal_url(current, box))
    return render(
        request,
        "console/bal_create.html",
        {"structure": current, "form": form, "kind": KINDS[kind], "slug": kind},
    )


def _per_create(request: HttpRequest, current: Structure, domains: list[str]) -> HttpResponse:
    person: User | None = None
    national_id = ""
    form: PerCreateForm | None
    if request.method == "POST":
        form = PerCreateForm(request.POST, domains=domains)
        if form.is_valid():
            data = form.cleaned_data
            person = structure_person(current, data["personne"]) if data["personne"] else None
            national_id = data["rpps"]
            try:
                box = people.per_mailbox_create(
                    structure=current,
                    actor=_user(request),
                    user=person,
                    national_id=national_id,
                    local_part=data["local_part"],
                    domain=current.domains.get(domain=data["domain"]),
                    display_name=data["display_name"],
                    liste_rouge=data["liste_rouge"],
                    request=request,
                )
            except ValidationError as exc:
                form.add_error(None, _errors(exc))
            else:
                messages.success(request, f"La BAL {box.address} est créée.")
                return redirect(_bal_url(current, box))
        return render(
            request,
            "console/bal_create.html",
            {"structure": current, "form": form, "kind": Mailbox.Kind.PER, "slug": "per"},
        )
    # GET: search, or the chosen person with the proposed address.
    text = request.GET.get("q", "")[:100]
    chosen = request.GET.get("personne", "")
    national_id = request.GET.get("rpps", "")[:64]
    first = last = ""
    if chosen:
        person = structure_person(current, chosen)
        first, last = person.first_name, person.last_name
    elif national_id:
        found = [c for c in professional_candidates(current, national_id) if c.national_id]
        if not found:
            raise Http404
        first, last = found[0].first_name, found[0].last_name
    form = None
    if person is not None or national_id:
        try:
            proposal = address_propose(first_name=first, last_name=last, domain=domains[0])
        except ValueError:
            proposal = ""
        form = PerCreateForm(
            initial={
                "local_part": proposal.partition("@")[0],
                "domain": domains[0],
                "personne": str(person.public_id) if person else "",
                "rpps": national_id,
                "display_name": f"{first} {last.upper()}".strip(),
            },
            domains=domains,
        )
    return render(
        request,
        "console/bal_create.html",
        {
            "structure": current,
            "kind": Mailbox.Kind.PER,
            "slug": "per",
            "q": text,
            "candidates": professional_candidates(current, text) if text else None,
            "form": form,
            "chosen": f"{first} {last.upper()}".strip(),
        },
    )


def _bal_context(current: Structure, box: Mailbox, **extra: Any) -> dict[str, Any]:
    access_form = AccessForm()
    set_choices(access_form, "person", _person_choices(current))
    edit = BalEditForm(
        initial={
            "display_name": box.display_name,
            "service": box.service,
            "description": box.description,
            "liste_rouge": box.liste_rouge,
            "responsible": str(box.responsible.public_id) if box.responsible else "",
        }
    )
    set_choices(edit, "responsible", [("", "—"), *_person_choices(current)])
    return {
        "structure": current,
        "box": box,
        "holder_pending": box.kind == Mailbox.Kind.PER and not people.holder_has_signed_in(box),
        "people": mailbox_people(box),
        "access_form": access_form,
        "edit_form": edit,
        "notice_form": NoticeForm(
            initial={
                "notice_email": box.notice_email,
                "notice_interval_minutes": box.notice_interval_minutes,
            }
        ),
        "exports": list(box.exports.select_related("actor")[:10]),
        "active_job": box.jobs.filter(
            state__in=[MailboxJob.State.QUEUED, MailboxJob.State.RUNNING]
        ).first(),
        "has_key": bool(current.recovery_key_fingerprint),
        "certificates": list(box.certificates.select_related("created_by"))
        if box.kind == Mailbox.Kind.APP
        else [],
        "usage": quota.usage_of(box),
        "quota_mo": f"{box.quota_bytes / quota.MEGABYTE:g}" if box.quota_bytes is not None else "",
        **extra,
    }


@professional_required
@require_GET
def bal(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    return render(request, "console/bal.html", _bal_context(current, box))


@professional_required
@require_POST
def bal_edit(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    form = BalEditForm(request.POST)
    set_choices(form, "responsible", [("", "—"), *_person_choices(current)])
    if form.is_valid():
        data = form.cleaned_data
        try:
            people.mailbox_update(
                mailbox=box,
                actor=_user(request),
                display_name=data["display_name"],
                service=data["service"],
                description=data["description"],
                liste_rouge=data["liste_rouge"],
                responsible=structure_person(current, data["responsible"])
                if data["responsible"]
                else None,
                request=request,
            )
        except ValidationError as exc:
            messages.error(request, _errors(exc))
        else:
            messages.success(request, "Les informations de la BAL sont enregistrées.")
    else:
        messages.error(request, "Le formulaire est incomplet : vérifiez le nom affiché.")
    return redirect(_bal_url(current, box))


@professional_required
@require_POST
def bal_quota(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    """The director sets the BAL's quota (in megabytes, empty: no limit); the operator may set
    it too, from its console."""
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    value = quota.megabytes_to_bytes(request.POST.get("quota_mo", ""))
    quota.mailbox_quota_set(mailbox=box, quota_bytes=value, actor=_user(request), request=request)
    if value is None:
        messages.success(request, "La BAL n'a plus de quota.")
    else:
        messages.success(request, f"Le quota de la BAL est de {value / quota.MEGABYTE:g} Mo.")
    return redirect(_bal_url(current, box))


@professional_required
@require_POST
@recent_auth_required
def bal_access(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    """Add a member of an ORG/APP BAL or change their rights (a sensitive action). A PER
    BAL's delegations are its holder's: the service answers 403 to anyone else."""
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    form = AccessForm(request.POST)
    set_choices(form, "person", _person_choices(current))
    if not form.is_valid():
        messages.error(request, "Choisissez une personne de la structure et ses droits.")
        return redirect(_bal_url(current, box))
    user = structure_person(current, form.cleaned_data["person"])
    ask = replace_confirmation(request, box=box, user=user, form=form, back=_bal_url(current, box))
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
        messages.error(request, _errors(exc))
    else:
        messages.success(request, f"{user.display_name} a maintenant accès à {box.address}.")
    return redirect(_bal_url(current, box))


@professional_required
@require_POST
@recent_auth_required
def bal_access_revoke(
    request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID, access_id: uuid.UUID
) -> HttpResponse:
    """Take a right back (a sensitive action); on a PER BAL its holder is told."""
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    access = console_access(box, access_id)
    people.access_revoke(access=access, actor=_user(request), request=request)
    messages.success(request, f"{access.user.display_name} n'a plus accès à {box.address}.")
    return redirect(_bal_url(current, box))


@professional_required
@require_POST
def bal_status(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    form = StatusForm(request.POST)
    if not form.is_valid():
        return HttpResponse(status=400)
    try:
        if form.cleaned_data["action"] == "suspend":
            lifecycle.mailbox_suspend(mailbox=box, actor=_user(request))
            messages.success(
                request,
                f"La BAL {box.address} est suspendue : elle reste lisible, n'envoie plus et "
                "refuse temporairement les nouveaux messages (les expéditeurs réessaieront).",
            )
        else:
            lifecycle.mailbox_reactivate(mailbox=box, actor=_user(request))
            messages.success(request, f"La BAL {box.address} est réactivée.")
    except ValidationError as exc:
        messages.error(request, _errors(exc))
    return redirect(_bal_url(current, box))


@professional_required
@require_POST
def bal_notice(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    form = NoticeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Saisissez une adresse électronique valide et un intervalle.")
        return redirect(_bal_url(current, box))
    try:
        notice_configure(
            mailbox=box,
            email=form.cleaned_data["notice_email"] or "",
            interval_minutes=form.cleaned_data["notice_interval_minutes"],
            actor=_user(request),
            request=request,
        )
    except ValidationError as exc:
        messages.error(request, _errors(exc))
    else:
        messages.success(
            request,
            "Notification enregistrée."
            if form.cleaned_data["notice_email"]
            else "Notification désactivée.",
        )
    return redirect(_bal_url(current, box))


@professional_required
@require_http_methods(["GET", "POST"])
@recent_auth_required
def bal_close(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    """Close a BAL: export every folder encrypted to the recovery key, then delete."""
    return _destructive(request, structure_id, bal_id, close=True)


@professional_required
@require_http_methods(["GET", "POST"])
@recent_auth_required
def bal_export(request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID) -> HttpResponse:
    return _destructive(request, structure_id, bal_id, close=False)


def _destructive(
    request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID, *, close: bool
) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    if box.status == Mailbox.Status.CLOSED:
        messages.error(request, "Cette BAL est déjà fermée.")
        return redirect(_bal_url(current, box))
    form = ConfirmForm(request.POST or None, mailbox=box)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            job = jobs.job_request(
                mailbox=box,
                kind=MailboxJob.Kind.CLOSE if close else MailboxJob.Kind.EXPORT,
                actor=_user(request),
                request=request,
            )
        except RecoveryKeyMissing as exc:
            form.add_error(None, exc.user_message)
            status = 409
        except ValidationError as exc:
            form.add_error(None, _errors(exc))
            status = 409
        else:
            return redirect("console:job", current.public_id, job.public_id)
    elif request.method == "POST":
        status = 400
    return render(
        request,
        "console/bal_close.html",
        {
            "structure": current,
            "box": box,
            "form": form,
            "close": close,
            "has_key": bool(current.recovery_key_fingerprint),
            "certificates": list(box.certificates.select_related("created_by"))
            if box.kind == Mailbox.Kind.APP
            else [],
        },
        status=status,
    )


@professional_required
@require_GET
def job(request: HttpRequest, structure_id: uuid.UUID, job_id: uuid.UUID) -> HttpResponse:
    """Where a close or export stands; htmx polls the fragment until the job ends."""
    current = console_structure(_user(request), structure_id)
    found = (
        MailboxJob.objects.select_related("mailbox", "export")
        .filter(public_id=job_id, mailbox__structure=current)
        .first()
    )
    if found is None:
        raise Http404
    template = "console/_job.html" if request.htmx else "console/job.html"  # type: ignore[attr-defined]
    return render(request, template, {"structure": current, "job": found, "box": found.mailbox})


@professional_required
@require_GET
@recent_auth_required
def export_download(
    request: HttpRequest, structure_id: uuid.UUID, export_id: uuid.UUID
) -> HttpResponseBase:
    """The encrypted archive: useless without the structure's private recovery key."""
    current = console_structure(_user(request), structure_id)
    export = MailboxExport.objects.filter(public_id=export_id, mailbox__structure=current).first()
    if export is None:
        raise Http404
    handle = export_svc.export_open(export=export, actor=_user(request), request=request)
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=f"{export.mailbox.address}-{export.created_at:%Y%m%d-%H%M%S}.tar.gz.gpg",
        content_type="application/pgp-encrypted",
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response


@professional_required
@require_GET
def publication(request: HttpRequest) -> HttpResponse:
    """What our BALs look like in the national directory, and the FHIR PATCH of each."""
    structures = directed_structures(_user(request))
    if not structures:
        raise Http404
    plan = publication_plan(structures=structures)
    return render(
        request,
        "mailboxes/publication.html",
        {
            "plan": plan,
            "to_update": sum(1 for p in plan if p.differences),
            "structures": structures,
            "last_import": directory_last_import(),
        },
    )


@professional_required
@require_GET
def publication_moved(request: HttpRequest) -> HttpResponse:
    """The annuaire page's former address, under /bal/: permanently moved to the console."""
    return redirect(reverse("console:publication"), permanent=True)
