"""The single writer of functional traces (Référentiel #2 SC.MSS/CONF.17-18, peers.md §6.1).

Callers are services: they call ``audit_record`` inside their own transaction so that the trace
and the change it describes are committed together, or not at all. A trace never carries
content (no subject, no body, no claim values beyond identifiers).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.db import models

from accounts.models import AuditEvent, Structure

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import User


class Action(StrEnum):
    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    LOGOUT = "auth.logout"
    STRUCTURE_CREATED = "structure.created"
    MEMBERSHIP_ADDED = "membership.added"
    MEMBERSHIP_ROLE_CHANGED = "membership.role_changed"
    MEMBERSHIP_REMOVED = "membership.removed"


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_event(
    *,
    action: str,
    actor: User | None = None,
    actor_label: str = "",
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    structure: Structure | None = None,
    structure_id: int | None = None,
    success: bool = True,
    error_code: str = "",
    request: HttpRequest | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """One trace, not yet written: ``audit_record`` writes it, ``audit_record_many`` writes
    several at once. Arguments as for ``audit_record``."""
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(getattr(target, "public_id", target.pk))
    if actor is not None and not actor_label:
        actor_label = actor.national_id or actor.username
    return AuditEvent(
        actor=actor,
        actor_label=actor_label[:150],
        action=str(action),
        target_type=target_type,
        target_id=target_id[:128],
        structure_id=structure.pk if structure is not None else structure_id,
        result=AuditEvent.Result.SUCCESS if success else AuditEvent.Result.FAILURE,
        error_code=error_code[:64],
        ip_address=client_ip(request),
        details=details or {},
    )


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    actor_label: str = "",
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    structure: Structure | None = None,
    structure_id: int | None = None,
    success: bool = True,
    error_code: str = "",
    request: HttpRequest | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one trace.

    ``target`` (a model instance with a ``public_id``) or ``target_type``/``target_id`` name what
    was acted on. ``details`` holds identifiers only, never message or claim content.
    """
    event = audit_event(
        action=action,
        actor=actor,
        actor_label=actor_label,
        target=target,
        target_type=target_type,
        target_id=target_id,
        structure=structure,
        structure_id=structure_id,
        success=success,
        error_code=error_code,
        request=request,
        details=details,
    )
    event.save(force_insert=True)
    return event


def audit_record_many(events: list[AuditEvent]) -> None:
    """Write several traces built with ``audit_event`` in one INSERT (the relay records a batch
    of messages at once); same rules as ``audit_record``."""
    AuditEvent.objects.bulk_create(events, batch_size=500)
