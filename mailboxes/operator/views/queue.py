"""The outbound queue: deliveries by state and peer domain, the oldest due, search, a message's
recipients, and the two actions on it (retry now, abandon with a bounce)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User
from mailboxes.models import OutboundDelivery
from mailboxes.operator import selectors, services
from mailboxes.operator.charts import hourly_svg
from mailboxes.operator.guard import operator_required


class SearchForm(forms.Form):
    q = forms.CharField(label=_("Message-ID, expéditeur ou destinataire"), max_length=320,
                        required=False)  # fmt: skip


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@operator_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.GET)
    text = form.cleaned_data["q"] if form.is_valid() else ""
    return render(
        request,
        "operator/queue.html",
        {
            "section": "queue",
            "form": form,
            "searched": text,
            "results": selectors.message_search(text) if text else [],
            "domains": selectors.queue_by_domain(),
            "totals": selectors.queue_totals(),
            "oldest": selectors.oldest_due(),
            "traffic_chart": hourly_svg(
                selectors.hourly_traffic(), title=_("Messages par heure, dernières 24 heures")
            ),
            "Status": OutboundDelivery.Status,
        },
    )


@operator_required
@require_GET
def message(request: HttpRequest, message_id: str) -> HttpResponse:
    outbound = selectors.queued_message(message_id)
    deliveries = list(selectors.message_deliveries(outbound))
    return render(
        request,
        "operator/message.html",
        {
            "section": "queue",
            "message": outbound,
            "deliveries": deliveries,
            "queued": sum(1 for d in deliveries if d.status == OutboundDelivery.Status.QUEUED),
        },
    )


@operator_required
@require_POST
def retry(request: HttpRequest, message_id: str) -> HttpResponse:
    outbound = selectors.queued_message(message_id)
    count = services.delivery_retry_now(message=outbound, actor=_user(request), request=request)
    messages.success(
        request,
        ngettext(
            "Nouvel essai lancé pour %(n)d destinataire.",
            "Nouvel essai lancé pour %(n)d destinataires.",
            count,
        )
        % {"n": count},
    )
    return redirect("operator_console:message", message_id=outbound.public_id)


@operator_required
@require_POST
def abandon(request: HttpRequest, message_id: str) -> HttpResponse:
    outbound = selectors.queued_message(message_id)
    count = services.delivery_abandon(message=outbound, actor=_user(request), request=request)
    messages.success(
        request,
        ngettext(
            "Envoi abandonné pour %(n)d destinataire ; l'expéditeur reçoit un avis de non-remise.",
            "Envoi abandonné pour %(n)d destinataires ; l'expéditeur reçoit un avis de non-remise.",
            count,
        )
        % {"n": count},
    )
    return redirect("operator_console:message", message_id=outbound.public_id)
