"""The console's read-mostly pages: inbound (the gateway), trust, directory, structures and
their BALs (with the quota, the one write here)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User
from accounts.typography import elide_de
from mailboxes.operator import selectors
from mailboxes.operator.guard import operator_required
from mailboxes.transport.quota import MEGABYTE, mailbox_quota_set, megabytes_to_bytes


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@operator_required
@require_GET
def inbound(request: HttpRequest) -> HttpResponse:
    return render(
        request, "operator/inbound.html", {"section": "inbound", "view": selectors.inbound()}
    )


@operator_required
@require_GET
def trust(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "operator/trust.html",
        {
            "section": "trust",
            "whitelist": selectors.whitelist_in_force(),
            "crl": selectors.crl_in_force(),
            "certificates": selectors.our_certificates(),
            "warning_days": selectors.CERT_WARNING_DAYS,
        },
    )


@operator_required
@require_GET
def directory(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "operator/directory.html",
        {
            "section": "directory",
            "imports": selectors.imports(),
            "publication": selectors.publication(),
        },
    )


@operator_required
@require_GET
def structures(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "operator/structures.html",
        {"section": "structures", "rows": selectors.structures()},
    )


@operator_required
@require_GET
def structure(request: HttpRequest, structure_id: str) -> HttpResponse:
    found = selectors.structure_of(structure_id)
    return render(
        request,
        "operator/structure.html",
        {
            "section": "structures",
            "structure": found,
            "boxes": selectors.structure_boxes(found),
            "megabyte": MEGABYTE,
        },
    )


@operator_required
@require_POST
def quota(request: HttpRequest, bal_id: str) -> HttpResponse:
    box = selectors.mailbox_of(bal_id)
    value = megabytes_to_bytes(request.POST.get("quota_mo", ""))
    mailbox_quota_set(mailbox=box, quota_bytes=value, actor=_user(request), request=request)
    if value is None:
        messages.success(request, _("%(bal)s n'a plus de quota.") % {"bal": box.address})
    else:
        messages.success(
            request,
            _("Le quota %(of_bal)s est de %(mo)s Mo.")
            % {"of_bal": elide_de(box.address), "mo": number_format(round(value / MEGABYTE, 2))},
        )
    return redirect("operator_console:structure", structure_id=box.structure.public_id)
