"""Template context of the mailboxes app: whether to show the console link."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from accounts.models import User
from accounts.selectors import directed_structure_ids


def console(request: HttpRequest) -> dict[str, object]:
    """``console_link``: the person administers a structure (evaluated only when a template
    asks; the query of ``directed_structure_ids``, shared with the page's own checks)."""
    user = getattr(request, "user", None)

    def allowed() -> bool:
        if not isinstance(user, User) or not user.national_id:
            return False
        return user.is_staff or bool(directed_structure_ids(user))

    return {"console_link": SimpleLazyObject(allowed)}
