"""Writes of the accounts app: identities from Pro Santé Connect, structures, memberships.

Each service owns its transaction and writes its trace in it (accounts.audit).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import Action, actor_label_of, audit_record
from accounts.errors import NationalIdMismatch
from accounts.identifiers import validate_finess, validate_siret
from accounts.models import Activity, AuditEvent, Membership, Structure, StructureDomain, User
from accounts.psc.claims import PscActivity, PscIdentity

if TYPE_CHECKING:
    from django.http import HttpRequest


def _structures_for_activities(activities: Iterable[PscActivity]) -> dict[int, Structure]:
    """Map activity positions to the hosted structure they designate (FINESS site, FINESS
    legal entity, then SIRET), in one query."""
    activities = list(activities)
    query = Q()
    for act in activities:
        if act.finess_site:
            query |= Q(
                identifier_kind=Structure.IdentifierKind.FINESS_EG, identifier=act.finess_site
            )
        if act.finess_legal:
            query |= Q(
                identifier_kind=Structure.IdentifierKind.FINESS_EJ, identifier=act.finess_legal
            )
        if act.siret:
            query |= Q(identifier_kind=Structure.IdentifierKind.SIRET, identifier=act.siret)
    if not query:
        return {}
    known = {(s.identifier_kind, s.identifier): s for s in Structure.objects.filter(query)}
    found: dict[int, Structure] = {}
    for position, act in enumerate(activities):
        for key in (
            (Structure.IdentifierKind.FINESS_EG, act.finess_site),
            (Structure.IdentifierKind.FINESS_EJ, act.finess_legal),
            (Structure.IdentifierKind.SIRET, act.siret),
        ):
            if key[1] and key in known:
                found[position] = known[key]
                break
    return found


@transaction.atomic
def user_sync_from_psc(*, user: User, identity: PscIdentity) -> User:
    """Refresh a professional's identity, activities and PSC-derived memberships from the
    claims of a sign-in.

    Memberships: an activity at a structure hosted here makes the person a member of it.
    A member whose last activity there disappeared loses that PSC-derived membership; roles
    given by a director or the operator (director, invitation) are never removed here.
    Raises NationalIdMismatch, writing nothing, when ``identity`` is not the account's own
    (another national id, or an account without one such as the operator's): the national
    id keys the account and is never rewritten.
    Side effects: rows of Activity and Membership; membership traces.
    """
    if user.national_id != identity.national_id:
        raise NationalIdMismatch(
            account_national_id=user.national_id or "",
            presented_national_id=identity.national_id,
        )
    main = identity.main_exercice
    user.first_name = identity.first_name[:150]
    user.last_name = identity.last_name[:150]
    user.civility = identity.civility
    user.profession_code = main.profession_code if main else ""
    user.category_code = main.category_code if main else ""
    user.savoir_faire_type = main.savoir_faire_type if main else ""
    user.savoir_faire_code = main.savoir_faire_code if main else ""
    user.professions = [
        {
            "profession_code": ex.profession_code,
            "category_code": ex.category_code,
            "savoir_faire_code": ex.savoir_faire_code,
        }
        for ex in identity.exercices
    ]
    user.last_auth_mode = identity.auth_mode
    user.psc_refreshed_at = timezone.now()
    user.save()

    matches = _structures_for_activities(identity.activities)
    Activity.objects.filter(user=user).delete()
    Activity.objects.bulk_create(
        Activity(
            user=user,
            position=position,
            profession_code=act.profession_code,
            mode=act.mode,
            sector_code=act.sector_code,
            role_code=act.role_code,
            name=act.name,
            finess_site=act.finess_site,
            finess_legal=act.finess_legal,
            siret=act.siret,
            technical_id=act.technical_id,
            postal_code=act.postal_code,
            city=act.city,
            structure=matches.get(position),
        )
        for position, act in enumerate(identity.activities)
    )

    current = {s.pk: s for s in matches.values()}
    existing = {
        m.structure_id: m for m in Membership.objects.filter(user=user).select_related("structure")
    }
    for structure_id, structure in current.items():
        if structure_id not in existing:
            membership = Membership.objects.create(
                user=user,
                structure=structure,
                role=Membership.Role.MEMBER,
                source=Membership.Source.PSC,
            )
            audit_record(
                action=Action.MEMBERSHIP_ADDED,
                actor_label="pro-sante-connect",
                target=membership,
                structure=structure,
                details={"user": str(user.public_id), "source": "psc"},
            )
    for structure_id, membership in existing.items():
        if (
            structure_id not in current
            and membership.source == Membership.Source.PSC
            and membership.role == Membership.Role.MEMBER
        ):
            audit_record(
                action=Action.MEMBERSHIP_REMOVED,
                actor_label="pro-sante-connect",
                target=membership,
                structure=membership.structure,
                details={"user": str(user.public_id), "reason": "activity_ended"},
            )
            membership.delete()
    return user


@transaction.atomic
def structure_create(
    *,
    identifier_kind: str,
    identifier: str,
    name: str,
    domains: Iterable[str] = (),
    actor: User | None = None,
) -> Structure:
    """Create a structure with its MSSanté domains. Raises ValidationError (French messages)
    for a malformed FINESS/SIRET, or an identifier or domain already registered."""
    if identifier_kind in (Structure.IdentifierKind.FINESS_EG, Structure.IdentifierKind.FINESS_EJ):
        identifier = validate_finess(identifier)
    elif identifier_kind == Structure.IdentifierKind.SIRET:
        identifier = validate_siret(identifier)
    else:
        raise ValidationError("Type d'identifiant inconnu.", code="identifier_kind")
    if Structure.objects.filter(identifier_kind=identifier_kind, identifier=identifier).exists():
        raise ValidationError("Cette structure est déjà enregistrée.", code="structure_exists")
    structure = Structure.objects.create(
        identifier_kind=identifier_kind, identifier=identifier, name=name
    )
    for domain in domains:
        domain = domain.strip().lower()
        if StructureDomain.objects.filter(domain=domain).exists():
            raise ValidationError(
                f"Le domaine {domain} appartient déjà à une autre structure.",
                code="domain_exists",
            )
        StructureDomain.objects.create(structure=structure, domain=domain)
    audit_record(
        action=Action.STRUCTURE_CREATED,
        actor=actor,
        actor_label=actor_label_of(actor),
        target=structure,
        structure=structure,
    )
    return structure


@transaction.atomic
def membership_set_role(
    *,
    structure: Structure,
    user: User,
    role: str,
    actor: User | None,
    request: HttpRequest | None = None,
) -> Membership:
    """Give ``user`` the ``role`` in ``structure`` (creating the membership if needed).

    Side effects: a ``membership.role_changed`` trace with the old and new roles.
    """
    if role not in Membership.Role.values:
        raise ValidationError("Rôle inconnu.", code="role")
    membership, created = Membership.objects.select_for_update().get_or_create(
        user=user,
        structure=structure,
        defaults={
            "role": role,
            "source": Membership.Source.OPERATOR
            if actor is None or actor.is_superuser
            else Membership.Source.INVITATION,
        },
    )
    old_role = "" if created else membership.role
    if not created and membership.role == role:
        return membership
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        action=Action.MEMBERSHIP_ROLE_CHANGED,
        actor=actor,
        actor_label=actor_label_of(actor),
        target=membership,
        structure=structure,
        request=request,
        details={"user": str(user.public_id), "old_role": old_role, "new_role": role},
    )
    return membership


def sessions_purge_expired() -> int:
    """Delete expired sessions (database session backend). Returns how many were deleted."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted


AUDIT_PURGED = Action.AUDIT_PURGED
AUDIT_PURGE_BATCH = 5000


def _purge_batch(cutoff: datetime) -> int:
    """Delete at most AUDIT_PURGE_BATCH traces older than ``cutoff``, oldest first.

    On PostgreSQL only the database function may delete traces (the append-only trigger of
    migration 0003 refuses any other DELETE); SQLite (embedded mode) has no trigger.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT accounts_audit_purge(%s, %s)", [cutoff, AUDIT_PURGE_BATCH])
            return int(cursor.fetchone()[0])
    old = AuditEvent.objects.filter(occurred_at__lt=cutoff).order_by("occurred_at")
    batch = list(old.values_list("pk", flat=True)[:AUDIT_PURGE_BATCH])
    return AuditEvent.objects.filter(pk__in=batch).delete()[0] if batch else 0


def audit_purge(*, older_than_days: int | None = None) -> int:
    """Delete the traces older than ``older_than_days`` (default settings.AUDIT_RETENTION_DAYS,
    six months; at least one day, which the database enforces too) and return how many went.

    Deleted in batches of AUDIT_PURGE_BATCH, each batch its own statement and transaction:
    no giant DELETE holding locks on the whole table, and a run cut short is simply finished
    by the next one (safe to run twice). Raises ValueError for less than one day. Side
    effect: one ``audit.purged`` trace with the count and the cutoff, written after the purge
    so it survives it.
    """
    days = settings.AUDIT_RETENTION_DAYS if older_than_days is None else older_than_days
    if days < 1:
        raise ValueError("audit traces are kept at least one day")
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while count := _purge_batch(cutoff):
        deleted += count
    audit_record(
        action=AUDIT_PURGED,
        actor_label="systeme",
        details={"deleted": deleted, "cutoff": cutoff.isoformat(), "retention_days": days},
    )
    return deleted
