"""The confirmation step before a grant replaces rights a person already holds on a BAL."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import User
from mailboxes.console.forms import AccessForm
from mailboxes.console.selectors import existing_access
from mailboxes.models import Mailbox


def replace_confirmation(
    request: HttpRequest, *, box: Mailbox, user: User, form: AccessForm, back: str
) -> HttpResponse | None:
    """When ``user`` already holds rights on ``box`` and the form was not confirmed, the page
    that shows those rights next to the new ones and asks to confirm the replacement (the
    same form, posted again with « replace »); None when the grant may go ahead."""
    current = existing_access(box, user)
    if current is None or form.cleaned_data.get("replace"):
        return None
    return render(
        request,
        "console/access_replace.html",
        {
            "box": box,
            "person": user,
            "current": current,
            "new_rights": form.rights_words(),
            "new_until": form.cleaned_data.get("until"),
            "data": {
                "person": str(user.public_id),
                "rights": form.cleaned_data["rights"],
                "until": form.cleaned_data["until"].isoformat()
                if form.cleaned_data.get("until")
                else "",
            },
            "action": request.path,
            "back": back,
        },
    )
