"""Access to the portal's pages: professionals only (PSC identity). The break-glass operator
account (no national id) reaches the Django admin and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

View = Callable[..., HttpResponse]


def professional_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not getattr(request.user, "national_id", None):
            return render(request, "accounts/operator_only.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper
