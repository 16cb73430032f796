"""The annuaire page (search like annuaire.sante.fr) and its autocomplete. Reads only."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.decorators import professional_required
from accounts.ratelimit import ANNUAIRE_SEARCH, ANNUAIRE_SUGGEST, rate_limited
from annuaire.forms import DirectorySearchForm
from annuaire.presenters import suggestions_html
from annuaire.selectors import (
    directory_choices,
    directory_last_import,
    directory_search,
    directory_suggest,
    typos_tolerated,
)


@require_GET
@professional_required
@rate_limited(ANNUAIRE_SEARCH)
def search(request: HttpRequest) -> HttpResponse:
    form = DirectorySearchForm(request.GET or None, choices=directory_choices())
    context: dict[str, object] = {
        "form": form,
        "last_import": directory_last_import(),
        "typos_tolerated": typos_tolerated(),
    }
    if form.is_bound and form.is_valid():
        query = form.query()
        context["query"] = query
        if not query.is_empty():
            context["page"] = directory_search(query, form.cleaned_data.get("page") or 1)
            params = request.GET.copy()
            params.pop("page", None)
            context["params"] = params.urlencode()
    template = "annuaire/search.html"
    if request.htmx and request.htmx.target == "resultats":  # type: ignore[attr-defined]
        template = "annuaire/_results.html"
    return render(request, template, context)


@require_GET
@professional_required
@rate_limited(ANNUAIRE_SUGGEST)
def suggest(request: HttpRequest) -> HttpResponse:
    """The 10 best BALs for what is typed (htmx fragment)."""
    text = request.GET.get("q", "")[:100]
    return HttpResponse(suggestions_html(directory_suggest(text), text))
