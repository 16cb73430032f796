"""Template context of the mailboxes app: whether to show the console link."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from accounts.models import Membership, User


def console(request: HttpRequest) -> dict[str, object]:
    """``console_link``: the person administers a structure (evaluated only when a template
    asks, one EXISTS query)."""
    user = getattr(request, "user", None)

    def allowed() -> bool:
        if not isinstance(user, User) or not user.national_id:
            return False
        return (
            user.is_staff
            or Membership.objects.filter(user=user, role=Membership.Role.DIRECTOR).exists()
        )

    return {"console_link": SimpleLazyObject(allowed)}
