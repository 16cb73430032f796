"""People of a structure and their rights on its BALs (the console's « Personnes »).

Members of ORG/APP BALs (read / send / manage), delegations of a PER BAL (granted by the
holder or the director, read or read+send, optional end date), invitations by national id,
BAL details. Every change is a service with its trace naming the actor; rights take effect at
once (the grants are read per request, revocation is a DELETE).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import Action, audit_record
from accounts.identifiers import NATIONAL_ID_RE
from accounts.models import Membership, Structure, StructureDomain, User
from accounts.services import membership_set_role
from annuaire.selectors import directory_professional
from mailboxes.console.services.lifecycle import mailbox_create
from mailboxes.models import Mailbox, MailboxAccess

if TYPE_CHECKING:
    from django.http import HttpRequest


def _member_of(structure_id: int, user: User) -> bool:
    return Membership.objects.filter(structure_id=structure_id, user=user).exists()


@transaction.atomic
def access_set(
    *,
    mailbox: Mailbox,
    user: User,
    can_send: bool,
    can_manage: bool = False,
    expires_at: datetime | None = None,
    actor: User | None,
    request: HttpRequest | None = None,
) -> MailboxAccess:
    """Give ``user`` a right on ``mailbox`` or change it: a member of an ORG/APP BAL, or a
    delegate of a PER BAL (never « gérer », optionally until ``expires_at``). ``actor`` None:
    the operator's own tooling (traced as « systeme »).

    Raises ValidationError (French) for a closed BAL, a person outside the structure, the
    holder of the PER BAL, or an end date in the past.
    """
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    if mailbox.status == Mailbox.Status.CLOSED:
        raise ValidationError("Cette BAL est fermée.", code="closed")
    if not _member_of(mailbox.structure_id, user):
        raise ValidationError(
            "Cette personne ne fait pas partie de la structure : invitez-la d'abord.",
            code="not_member",
        )
    per = mailbox.kind == Mailbox.Kind.PER
    if per and mailbox.owner_id == user.pk:
        raise ValidationError("Le titulaire a déjà tous les droits sur sa BAL.", code="owner")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("La date de fin de la délégation est passée.", code="expired")
    kind = MailboxAccess.Kind.DELEGATE if per else MailboxAccess.Kind.MEMBER
    access, created = MailboxAccess.objects.update_or_create(
        mailbox=mailbox,
        user=user,
        defaults={
            "kind": kind,
            "can_read": True,
            "can_send": can_send,
            "can_manage": can_manage and not per,
            "expires_at": expires_at if per else None,
            "granted_by": actor,
        },
    )
    audit_record(
        action=Action.ACCESS_GRANTED if created else Action.ACCESS_CHANGED,
        actor=actor,
        actor_label="" if actor else "systeme",
        target=mailbox,
        structure_id=mailbox.structure_id,
        request=request,
        details={
            "user": str(user.public_id),
            "national_id": user.national_id or "",
            "kind": kind,
            "send": access.can_send,
            "manage": access.can_manage,
            "until": expires_at.isoformat() if expires_at and per else "",
        },
    )
    return access


@transaction.atomic
def access_revoke(
    *, access: MailboxAccess, actor: User, request: HttpRequest | None = None
) -> None:
    """Remove a member or a delegate: from the next request on, the BAL is gone from their
    switcher and its pages answer 404."""
    mailbox = access.mailbox
    user = access.user
    MailboxAccess.objects.filter(pk=access.pk).delete()
    audit_record(
        action=Action.ACCESS_REVOKED,
        actor=actor,
        target=mailbox,
        structure_id=mailbox.structure_id,
        request=request,
        details={"user": str(user.public_id), "national_id": user.national_id or ""},
    )


@transaction.atomic
def mailbox_update(
    *,
    mailbox: Mailbox,
    actor: User,
    display_name: str,
    service: str = "",
    description: str = "",
    liste_rouge: bool = False,
    responsible: User | None = None,
    request: HttpRequest | None = None,
) -> Mailbox:
    """Edit what the directory shows of a BAL, and its responsible professional (ORG/APP)."""
    box = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    if box.status == Mailbox.Status.CLOSED:
        raise ValidationError("Cette BAL est fermée.", code="closed")
    display_name = " ".join(display_name.split())
    if not display_name:
        raise ValidationError("Le nom affiché est obligatoire.", code="display_name")
    changes: dict[str, Any] = {
        "display_name": display_name[:200],
        "service": " ".join(service.split())[:200],
        "description": " ".join(description.split())[:500],
        "liste_rouge": liste_rouge,
    }
    if box.kind != Mailbox.Kind.PER:
        if responsible is None or not responsible.national_id:
            raise ValidationError(
                "Une BAL organisationnelle ou applicative a un professionnel responsable.",
                code="responsible",
            )
        if not _member_of(box.structure_id, responsible):
            raise ValidationError(
                "Le responsable doit faire partie de la structure.", code="responsible"
            )
        changes["responsible"] = responsible
    changed = [k for k, v in changes.items() if getattr(box, k) != v]
    if not changed:
        return box
    for key, value in changes.items():
        setattr(box, key, value)
    box.save(update_fields=list(changes))
    audit_record(
        action=Action.MAILBOX_UPDATED,
        actor=actor,
        target=box,
        structure_id=box.structure_id,
        request=request,
        details={"fields": changed},
    )
    return box


@transaction.atomic
def professional_invite(
    *,
    structure: Structure,
    national_id: str,
    actor: User,
    request: HttpRequest | None = None,
) -> Membership:
    """Invite a professional by national id (idNat_PS). The account exists before their first
    sign-in (named from the national directory when it knows them); Pro Santé Connect attaches
    to it by the same id. Raises ValidationError for a malformed id or someone already there."""
    national_id = national_id.strip()
    if not NATIONAL_ID_RE.match(national_id):
        raise ValidationError(
            "L'identifiant national n'est pas valide (RPPS : 8 suivi de 11 chiffres ; "
            "ADELI : 0 suivi de 9 chiffres).",
            code="national_id",
        )
    user = User.objects.filter(national_id=national_id).first()
    if user is None:
        entry = directory_professional(national_id)
        user = User.objects.create(
            username=national_id,
            national_id=national_id,
            first_name=entry.first_name.title() if entry else "",
            last_name=entry.last_name.upper() if entry else "",
            profession_code=entry.profession_code if entry else "",
        )
        user.set_unusable_password()
        user.save(update_fields=["password"])
    elif Membership.objects.filter(structure=structure, user=user).exists():
        raise ValidationError(
            f"{user.display_name} fait déjà partie de la structure.", code="already_member"
        )
    membership = Membership.objects.create(
        user=user,
        structure=structure,
        role=Membership.Role.MEMBER,
        source=Membership.Source.INVITATION,
    )
    audit_record(
        action=Action.MEMBERSHIP_ADDED,
        actor=actor,
        target=membership,
        structure=structure,
        request=request,
        details={"user": str(user.public_id), "national_id": national_id, "how": "invitation"},
    )
    return membership


@transaction.atomic
def membership_remove(
    *, membership: Membership, actor: User, request: HttpRequest | None = None
) -> None:
    """Take a person out of the structure: their rights on its BALs go with it. A holder of
    a PER BAL of the structure stays until that BAL is closed; the last director stays."""
    if Mailbox.objects.filter(
        structure_id=membership.structure_id,
        owner_id=membership.user_id,
        status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED],
    ).exists():
        raise ValidationError(
            "Cette personne est titulaire d'une BAL personnelle de la structure : "
            "fermez d'abord la BAL.",
            code="holder",
        )
    if Mailbox.objects.filter(
        structure_id=membership.structure_id,
        responsible_id=membership.user_id,
        status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED],
    ).exists():
        raise ValidationError(
            "Cette personne est responsable d'une BAL de la structure : "
            "désignez d'abord un autre responsable.",
            code="responsible",
        )
    if (
        membership.role == Membership.Role.DIRECTOR
        and Membership.objects.filter(
            structure_id=membership.structure_id, role=Membership.Role.DIRECTOR
        ).count()
        == 1
    ):
        raise ValidationError(
            "La structure doit garder au moins un directeur ou une directrice.",
            code="last_director",
        )
    MailboxAccess.objects.filter(
        mailbox__structure_id=membership.structure_id, user_id=membership.user_id
    ).delete()
    audit_record(
        action=Action.MEMBERSHIP_REMOVED,
        actor=actor,
        target=membership,
        structure_id=membership.structure_id,
        request=request,
        details={"user": str(membership.user.public_id), "how": "console"},
    )
    membership.delete()


@transaction.atomic
def per_mailbox_create(
    *,
    structure: Structure,
    actor: User,
    local_part: str,
    domain: StructureDomain,
    user: User | None = None,
    national_id: str = "",
    display_name: str = "",
    liste_rouge: bool = False,
    request: HttpRequest | None = None,
) -> Mailbox:
    """Create the personal BAL of a professional of the structure, inviting them first when
    they are only known by their national id (from the national directory). One transaction:
    no invitation is left behind when the BAL cannot be created."""
    if user is None:
        known = User.objects.filter(national_id=national_id.strip()).first()
        if known is not None and _member_of(structure.pk, known):
            user = known
        else:
            user = professional_invite(
                structure=structure, national_id=national_id, actor=actor, request=request
            ).user
    elif not _member_of(structure.pk, user):
        raise ValidationError(
            "Cette personne ne fait pas partie de la structure : invitez-la d'abord.",
            code="not_member",
        )
    if Mailbox.objects.filter(
        structure=structure,
        kind=Mailbox.Kind.PER,
        owner=user,
        status__in=[Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED],
    ).exists():
        raise ValidationError(
            f"{user.display_name} a déjà une BAL personnelle dans la structure.", code="has_per"
        )
    civility = "Dr " if user.civility == "DR" else ""
    name = f"{civility}{user.first_name} {user.last_name.upper()}".strip()
    return mailbox_create(
        structure=structure,
        kind=Mailbox.Kind.PER,
        local_part=local_part,
        domain=domain,
        display_name=display_name.strip() or name or user.national_id or local_part,
        owner=user,
        liste_rouge=liste_rouge,
        actor=actor,
    )


def role_set(
    *, membership: Membership, role: str, actor: User, request: HttpRequest | None = None
) -> Membership:
    """Give or take the director role; the structure always keeps one director."""
    with transaction.atomic():
        if (
            membership.role == Membership.Role.DIRECTOR
            and role != Membership.Role.DIRECTOR
            and Membership.objects.select_for_update()
            .filter(structure_id=membership.structure_id, role=Membership.Role.DIRECTOR)
            .count()
            == 1
        ):
            raise ValidationError(
                "La structure doit garder au moins un directeur ou une directrice.",
                code="last_director",
            )
        return membership_set_role(
            structure=membership.structure,
            user=membership.user,
            role=role,
            actor=actor,
            request=request,
        )
