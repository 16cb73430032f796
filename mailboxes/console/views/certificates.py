"""The director binds a software's certificate to an APP BAL, or takes it back (API LPS: the
software then logs in with SASL EXTERNAL). Both are sensitive (a key to a BAL): recent
authentication, traced. The list is shown on the BAL's page (console/bal.html)."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.decorators import professional_required, recent_auth_required
from accounts.models import User
from mailboxes.console.selectors import console_certificate, console_mailbox, console_structure
from mailboxes.console.services.certificates import (
    MAX_CERTIFICATE_BYTES,
    certificate_bind,
    certificate_unbind,
)


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # professional_required ran first
    return request.user


@professional_required
@require_POST
@recent_auth_required
def certificate_add(
    request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID
) -> HttpResponse:
    """A certificate file (PEM or DER) or its PEM text pasted."""
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    back = reverse("console:bal", args=[current.public_id, box.public_id]) + "#certificats"
    upload = request.FILES.get("certificate")
    if upload is not None:
        data = upload.read(MAX_CERTIFICATE_BYTES + 1)  # one byte more: refused as too big
    else:
        data = request.POST.get("pem", "").strip().encode("utf-8", "replace")
    try:
        bound = certificate_bind(mailbox=box, data=data, actor=_user(request), request=request)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"Le logiciel « {bound.common_name} » peut désormais ouvrir {box.address} avec "
            "son certificat.",
        )
    return redirect(back)


@professional_required
@require_POST
@recent_auth_required
def certificate_remove(
    request: HttpRequest, structure_id: uuid.UUID, bal_id: uuid.UUID, certificate_id: uuid.UUID
) -> HttpResponse:
    current = console_structure(_user(request), structure_id)
    box = console_mailbox(current, bal_id)
    bound = console_certificate(box, certificate_id)
    certificate_unbind(certificate=bound, actor=_user(request), request=request)
    messages.success(
        request,
        f"Le certificat « {bound.common_name} » n'ouvre plus {box.address} ; "
        "ses sessions en cours sont fermées.",
    )
    return redirect(reverse("console:bal", args=[current.public_id, box.public_id]))
