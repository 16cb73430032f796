"""BAL lifecycle: create, suspend, reactivate (closing: ``closing``; rights: ``people``).

Each service owns its transaction, writes its trace, and re-provisions Dovecot after commit.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING

from celery import current_app
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from accounts.audit import Action, actor_label_of, audit_record
from accounts.models import Structure, StructureDomain, User
from mailboxes.models import Mailbox
from mailboxes.store import dovecot

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

# RFC 5321 §4.1.2 dot-atom, restricted to what MSSanté operators use in practice.
LOCAL_PART_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?$")


def dovecot_users_sync() -> int:
    """Rewrite Dovecot's list of BALs from the database (active and suspended ones).

    Idempotent and re-derivable: safe to call after every change and at every start. When
    Dovecot is a proxy (DOVECOT_BACKENDS), its list names each BAL's backend
    (Mailbox.dovecot_backend, empty: the first one); a BAL whose backend is no longer listed
    is left out (unreachable rather than opened on a backend that does not hold its mail).
    """
    served = Mailbox.objects.filter(status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED])
    instance = dovecot.instance_from_settings()
    if not instance.proxy:
        addresses = list(served.values_list("address", flat=True))
        dovecot.write_users(instance, addresses)
        return len(addresses)
    backends = dovecot.backends_from_settings()
    first = next(iter(backends.values()))
    routes = {}
    for address, name in served.values_list("address", "dovecot_backend"):
        backend = backends.get(name) if name else first
        if backend is None:
            logger.error(
                "BAL %s : serveur Dovecot « %s » absent de DOVECOT_BACKENDS", address, name
            )
            continue
        routes[address] = backend
    dovecot.write_users(instance, routes, routes=routes)
    for name in backends:  # each backend's own list, written on its host (dovecot-<name> queue)
        current_app.send_task(BACKEND_SYNC_TASK, args=[name], queue=f"dovecot-{name}")
    return len(routes)


BACKEND_SYNC_TASK = "mailboxes.tasks.dovecot_backend_sync"


def dovecot_backend_users_sync(name: str) -> int:
    """On the host of backend ``name`` (a worker there consumes the queue ``dovecot-<name>``):
    rewrite the BAL list of the instance in DOVECOT_DIR, that backend's, from the database."""
    instance = dataclasses.replace(dovecot.instance_from_settings(), proxy=False)
    addresses = dovecot_backend_users(name)
    dovecot.write_users(instance, addresses)
    return len(addresses)


def dovecot_backend_users(name: str) -> list[str]:
    """The BALs one backend stores (its own users file: it serves no other), active or
    suspended; the first backend listed also holds those that name none."""
    backends = dovecot.backends_from_settings()
    if name not in backends:
        raise ValueError(f"unknown Dovecot backend: {name!r}")
    served = Mailbox.objects.filter(status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED])
    mine = Q(dovecot_backend=name)
    if name == next(iter(backends)):
        mine |= Q(dovecot_backend="")
    return list(served.filter(mine).values_list("address", flat=True))


def dovecot_backend_for_new_mailbox() -> str:
    """The backend a new BAL goes to: the one that stores the fewest BALs (the first listed on
    a tie); empty without backends."""
    backends = list(dovecot.backends_from_settings())
    if not backends:
        return ""
    counts = dict(
        Mailbox.objects.exclude(status=Mailbox.Status.CLOSED)
        .filter(dovecot_backend__in=backends)
        .values_list("dovecot_backend")
        .annotate(n=Count("pk"))
        .values_list("dovecot_backend", "n")
    )
    counts[backends[0]] = counts.get(backends[0], 0) + (
        Mailbox.objects.exclude(status=Mailbox.Status.CLOSED).filter(dovecot_backend="").count()
    )
    return min(backends, key=lambda name: counts.get(name, 0))


def _provision_after_commit() -> None:
    transaction.on_commit(dovecot_users_sync)


@transaction.atomic
def mailbox_create(
    *,
    structure: Structure,
    kind: str,
    local_part: str,
    domain: StructureDomain | None = None,
    display_name: str,
    owner: User | None = None,
    responsible: User | None = None,
    service: str = "",
    description: str = "",
    liste_rouge: bool = False,
    actor: User | None,
) -> Mailbox:
    """Create a BAL and make Dovecot serve it.

    Raises ValidationError (French) for a malformed local part, a domain of another structure,
    a PER without holder or an ORG/APP without responsible, or an address already taken.
    """
    local_part = local_part.strip().lower()
    if not LOCAL_PART_RE.match(local_part) or ".." in local_part:
        raise ValidationError("La partie locale de l'adresse n'est pas valide.", code="local_part")
    domain = domain or structure.domains.order_by("domain").first()
    if domain is None or domain.structure_id != structure.pk:
        raise ValidationError("Ce domaine n'appartient pas à la structure.", code="domain")
    if kind == Mailbox.Kind.PER and (owner is None or not owner.national_id):
        raise ValidationError(
            "Une BAL personnelle est rattachée à un professionnel identifié "
            "(RPPS, ADELI ou RPPS+).",
            code="owner",
        )
    if kind in (Mailbox.Kind.ORG, Mailbox.Kind.APP) and responsible is None:
        raise ValidationError(
            "Une BAL organisationnelle ou applicative a un professionnel responsable.",
            code="responsible",
        )
    address = f"{local_part}@{domain.domain}"
    if Mailbox.objects.filter(address=address).exists():
        raise ValidationError(f"L'adresse {address} existe déjà.", code="address_taken")
    try:
        with transaction.atomic():
            mailbox = Mailbox.objects.create(
                structure=structure,
                domain=domain,
                local_part=local_part,
                address=address,
                kind=kind,
                display_name=display_name,
                owner=owner if kind == Mailbox.Kind.PER else None,
                responsible=responsible,
                service=service,
                description=description,
                liste_rouge=liste_rouge,
                dovecot_backend=dovecot_backend_for_new_mailbox(),
            )
    except IntegrityError as exc:  # a concurrent creation of the same address
        raise ValidationError(f"L'adresse {address} existe déjà.", code="address_taken") from exc
    audit_record(
        action=Action.MAILBOX_CREATED,
        actor=actor,
        actor_label=actor_label_of(actor),
        target=mailbox,
        structure=structure,
        details={"address": address, "kind": kind},
    )
    _provision_after_commit()
    return mailbox


def _set_status(mailbox: Mailbox, status: str, action: Action, actor: User | None) -> Mailbox:
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    if mailbox.status == Mailbox.Status.CLOSED:
        raise ValidationError("Cette BAL est fermée.", code="closed")
    if mailbox.status == status:
        return mailbox
    mailbox.status = status
    mailbox.status_changed_at = timezone.now()
    mailbox.save(update_fields=["status", "status_changed_at"])
    audit_record(
        action=action,
        actor=actor,
        actor_label=actor_label_of(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
    )
    _provision_after_commit()
    return mailbox


@transaction.atomic
def mailbox_suspend(*, mailbox: Mailbox, actor: User | None) -> Mailbox:
    """Suspend a BAL: it stays readable and keeps receiving, nothing can be changed or sent."""
    return _set_status(mailbox, Mailbox.Status.SUSPENDED, Action.MAILBOX_SUSPENDED, actor)


@transaction.atomic
def mailbox_reactivate(*, mailbox: Mailbox, actor: User | None) -> Mailbox:
    return _set_status(mailbox, Mailbox.Status.ACTIVE, Action.MAILBOX_REACTIVATED, actor)
