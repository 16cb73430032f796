"""New-mail notices to an ordinary address, outside the trust space.

Forwarding and distribution lists are forbidden in the MSSanté trust space (seed FAQ): a BAL
may instead have a notice sent to a standard address. It carries no health data: no subject,
no sender, no body, not even the BAL's address; only that a message is waiting. At most one
notice per BAL every ``notice_interval_minutes``.

The delivery paths (gateway, local relay) call ``mail_arrived``: for BALs without a notice it
costs nothing (a per-process set of watched addresses, re-read every 30 s), for the others one
conditional UPDATE that elects a single sender among concurrent deliveries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from accounts.audit import Action, audit_record
from accounts.models import StructureDomain, User
from annuaire.selectors import whitelist_knows_domain
from mailboxes.models import Mailbox

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

NOTICE_TASK = "mailboxes.tasks.send_notice"
NOTICE_SUBJECT = "Nouveau message sur votre messagerie MSSanté"
NOTICE_BODY = (
    "Bonjour,\n\n"
    "Vous avez un nouveau message sur votre messagerie MSSanté.\n"
    "Pour le lire, connectez-vous au portail avec Pro Santé Connect : {url}\n\n"
    "Ce message automatique ne contient aucune information sur le message reçu. "
    "Ne répondez pas à cette adresse.\n"
)
WATCH_SECONDS = 30.0
MIN_INTERVAL, MAX_INTERVAL = 5, 24 * 60

_watch_lock = threading.Lock()
_watch: tuple[float, frozenset[str]] = (0.0, frozenset())


def _watched() -> frozenset[str]:
    global _watch
    loaded_at, addresses = _watch
    if time.monotonic() - loaded_at < WATCH_SECONDS:
        return addresses
    with _watch_lock:
        addresses = frozenset(
            Mailbox.objects.filter(status=Mailbox.Status.ACTIVE)
            .exclude(notice_email="")
            .values_list("address", flat=True)
        )
        _watch = (time.monotonic(), addresses)
    return addresses


def notices_watch_reset() -> None:
    """Forget the watched addresses of this process (after a change of settings)."""
    global _watch
    _watch = (0.0, frozenset())


def mail_arrived(addresses: Iterable[str]) -> int:
    """Mail was delivered to these addresses: queue a notice for each BAL that wants one and
    had none within its interval. Returns how many notices were queued."""
    wanted = _watched().intersection(a.lower() for a in addresses)
    if not wanted:
        return 0
    now = timezone.now()
    queued = 0
    for box in Mailbox.objects.filter(address__in=wanted, status=Mailbox.Status.ACTIVE).exclude(
        notice_email=""
    ):
        last = box.notice_last_sent_at
        if last is not None and now - last < timedelta(minutes=box.notice_interval_minutes):
            continue
        # Only the delivery that moves the timestamp sends (concurrent gateways, relay).
        if Mailbox.objects.filter(pk=box.pk, notice_last_sent_at=last).update(
            notice_last_sent_at=now
        ):
            transaction.on_commit(partial(current_app.send_task, NOTICE_TASK, args=[box.pk]))
            queued += 1
    return queued


def notice_send(*, mailbox_id: int) -> bool:
    """Send the notice of one BAL (the task). False when there is nothing to send anymore."""
    box = Mailbox.objects.filter(pk=mailbox_id, status=Mailbox.Status.ACTIVE).first()
    if box is None or not box.notice_email:
        return False
    send_mail(
        NOTICE_SUBJECT,
        NOTICE_BODY.format(url=settings.SITE_URL or "le portail de votre opérateur"),
        settings.NOTICE_FROM_EMAIL,
        [box.notice_email],
    )
    audit_record(
        action=Action.NOTICE_SENT,
        actor_label="systeme",
        target=box,
        structure_id=box.structure_id,
    )
    return True


@transaction.atomic
def notice_configure(
    *,
    mailbox: Mailbox,
    email: str,
    interval_minutes: int,
    actor: User | None,
    request: HttpRequest | None = None,
) -> Mailbox:
    """Set (or clear, with an empty address) the new-mail notice of a BAL."""
    email = email.strip()
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise ValidationError(
                "L'adresse de notification n'est pas une adresse électronique valide.",
                code="notice_email",
            ) from None
        domain = email.lower().rpartition("@")[2]
        if (
            domain.endswith("mssante.fr")
            or whitelist_knows_domain(domain)
            or StructureDomain.objects.filter(domain=domain).exists()
        ):
            raise ValidationError(
                "La notification va vers une adresse ordinaire, hors de l'espace de confiance "
                "MSSanté : le transfert d'une BAL vers une autre est interdit.",
                code="notice_in_trust_space",
            )
    if not MIN_INTERVAL <= interval_minutes <= MAX_INTERVAL:
        raise ValidationError(
            f"L'intervalle entre deux notifications va de {MIN_INTERVAL} minutes à 24 heures.",
            code="notice_interval",
        )
    box = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    box.notice_email = email
    box.notice_interval_minutes = interval_minutes
    box.save(update_fields=["notice_email", "notice_interval_minutes"])
    audit_record(
        action=Action.NOTICE_CONFIGURED,
        actor=actor,
        target=box,
        structure_id=box.structure_id,
        request=request,
        details={"enabled": bool(email), "interval": interval_minutes},
    )
    transaction.on_commit(notices_watch_reset)
    return box
