"""Webmail: « Message d'absence » of a BAL (set, change, stop). Parse (a form) -> access (a
selector) -> one service -> render."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from accounts.decorators import professional_required
from mailboxes.access import Access, access_mailbox
from mailboxes.webmail.forms import AbsenceForm
from mailboxes.webmail.services.absence import absence_clear, absence_of, absence_set
from mailboxes.webmail.views.reading import _user


@professional_required
@require_http_methods(["GET", "POST"])
def absence(request: HttpRequest, public_id: str) -> HttpResponse:
    """The BAL's absence message: its state (« actif du … au … »), the form, « Arrêter »."""
    user = _user(request)
    grant = access_mailbox(user, public_id, Access.SEND)
    current = absence_of(grant=grant)
    here = reverse("mailboxes:absence", args=[grant.mailbox.public_id])
    if request.method == "POST" and request.POST.get("action") == "arreter":
        if absence_clear(grant=grant, actor=user, request=request):
            messages.success(request, "Message d'absence arrêté.")
        return redirect(here)
    today = timezone.localdate()
    initial = (
        {"debut": current.starts_on, "fin": current.ends_on, "texte": current.text}
        if current
        else {"debut": today, "fin": today}
    )
    form = AbsenceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            absence_set(
                grant=grant,
                actor=user,
                starts_on=form.cleaned_data["debut"],
                ends_on=form.cleaned_data["fin"],
                text=form.cleaned_data["texte"],
                request=request,
            )
        except ValidationError as exc:
            form.add_error("fin", exc)
        else:
            messages.success(request, "Message d'absence enregistré.")
            return redirect(here)
    context = {
        "form": form,
        "mailbox": grant.mailbox,
        "grant": grant,
        "absence": current,
        "in_force": current is not None and current.starts_on <= today <= current.ends_on,
        "ended": current is not None and current.ends_on < today,
    }
    return render(request, "mailboxes/absence.html", context, status=400 if form.errors else 200)
