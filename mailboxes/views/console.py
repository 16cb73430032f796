"""The director's console (issue 7 builds on it). For now: what our BALs look like in the
national directory, and the FHIR PATCH that publishes each one."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.decorators import professional_required
from accounts.models import User
from accounts.selectors import directed_structures
from annuaire.selectors import directory_last_import
from mailboxes.services.publication import publication_plan


@professional_required
@require_GET
def publication(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    structures = directed_structures(request.user)
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
