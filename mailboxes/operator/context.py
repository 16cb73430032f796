"""Template context: whether to show the operator console's link in the header."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from mailboxes.operator.guard import is_operator


def operator(request: HttpRequest) -> dict[str, object]:
    """``operator_link``: the person may open the operator's console (evaluated only when a
    template asks)."""
    return {"operator_link": SimpleLazyObject(lambda: is_operator(request))}
