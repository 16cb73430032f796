"""Who may use the operator's console: the operator's staff (``user.is_staff``), signed in with
Pro Santé Connect or, for the break-glass account, with its second factor passed in this
session, from OPERATOR_ADMIN_NETWORKS when that is set. Anyone else gets a 404 (the console
does not exist for them); anonymous visitors are sent to sign in like everywhere else."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase

from accounts.admin_site import from_operator_network, passed_second_factor
from accounts.models import User

View = Callable[..., HttpResponseBase]


def is_operator(request: HttpRequest) -> bool:
    """Whether the signed-in person is operator staff, strongly authenticated, from where the
    operator works."""
    user = request.user
    if not isinstance(user, User) or not (user.is_active and user.is_staff):
        return False
    if not from_operator_network(request):
        return False
    return bool(user.national_id) or passed_second_factor(request)


def operator_required(view: View) -> View:
    """The guard of every console view (outermost, so that a refused person sees a 404 before
    any method check or form)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not is_operator(request):
            raise Http404
        return view(request, *args, **kwargs)

    return wrapper
