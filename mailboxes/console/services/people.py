"""People of a structure and their rights on its BALs (the console's « Personnes »).

Members of ORG/APP BALs and delegates of a PER BAL hold four rights (mailboxes.access.Access):
read, organise, send, manage. Who may change them: for a PER BAL its holder alone (the
console shows delegations, it cannot grant them), never to themselves, and only once the
holder has signed in; for an ORG/APP BAL a director of the structure or a member who manages
it. The holder of a PER BAL is told of every change by a notice in their BAL. Invitations by
national id, BAL details. Every change is a service with its trace naming the actor; rights
take effect at once (the grants are read per request, revocation is a DELETE).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from accounts.audit import Action, actor_label_of, audit_record
from accounts.identifiers import NATIONAL_ID_RE, invited_national_id
from accounts.models import Membership, Structure, StructureDomain, User
from accounts.services import membership_set_role
from annuaire.selectors import directory_per_entries, directory_professional
from mailboxes.access import MISSING, Access, grant_for
from mailboxes.console.services.lifecycle import mailbox_create
from mailboxes.console.services.portal_mail import person_named, portal_mail_send, when_text
from mailboxes.errors import RightMissing
from mailboxes.models import Mailbox, MailboxAccess

if TYPE_CHECKING:
    from django.http import HttpRequest

NOT_THE_HOLDER = (
    "Seul le ou la titulaire d'une BAL personnelle peut la déléguer, depuis « Délégations » "
    "dans sa propre messagerie."
)


def _member_of(structure_id: int, user: User) -> bool:
    return Membership.objects.filter(structure_id=structure_id, user=user).exists()


def _directs(structure_id: int, user: User) -> bool:
    return Membership.objects.filter(
        structure_id=structure_id, user=user, role=Membership.Role.DIRECTOR
    ).exists()


def _may_change_rights(mailbox: Mailbox, actor: User | None, *, revoking: bool = False) -> None:
    """Raise RightMissing unless ``actor`` may change who uses ``mailbox``: the holder of a
    PER BAL (a director may also take a delegation back, never give one); for an ORG/APP BAL
    a director of the structure, a member with the manage right, or the operator's tooling
    (``actor`` None)."""
    if mailbox.kind == Mailbox.Kind.PER:
        if actor is not None and actor.pk == mailbox.owner_id:
            return
        if revoking and actor is not None and _directs(mailbox.structure_id, actor):
            return
        raise RightMissing(NOT_THE_HOLDER)
    if actor is None or _directs(mailbox.structure_id, actor):
        return
    grant = grant_for(actor, mailbox)
    if grant is None or not grant.allows(Access.MANAGE):
        raise RightMissing(MISSING[Access.MANAGE])


def holder_has_signed_in(mailbox: Mailbox) -> bool:
    """Whether the holder of a PER BAL proved their identity with Pro Santé Connect at least
    once (a BAL created from a national id waits for it before anyone else may use it)."""
    owner = mailbox.owner
    return owner is not None and owner.psc_refreshed_at is not None


def _holder_told(mailbox: Mailbox, *, what: str, actor: User | None) -> None:
    """The notice to the holder of a PER BAL after a change of its delegations: what changed,
    who did it, and everyone who can use the BAL now, until when."""
    if mailbox.kind != Mailbox.Kind.PER or mailbox.status == Mailbox.Status.CLOSED:
        return
    people = [
        a
        for a in MailboxAccess.objects.filter(mailbox=mailbox)
        .select_related("user")
        .order_by("user__last_name", "user__first_name")
        if a.expires_at is None or a.expires_at > timezone.now()
    ]
    lines = [
        f"- {a.user.display_name} : {a.rights_label}"
        + (
            f", jusqu'au {date_format(timezone.localtime(a.expires_at), 'j F Y')}"
            if a.expires_at
            else ", sans date de fin"
        )
        for a in people
    ]
    page = settings.SITE_URL + reverse("mailboxes:delegations", args=[mailbox.public_id])
    body = (
        f"Bonjour,\n\nLes délégations de votre BAL {mailbox.address} ont changé le "
        f"{when_text(timezone.now())} :\n{what}\n\nModification faite par : "
        f"{person_named(actor)}.\n\nPersonnes qui peuvent utiliser votre BAL aujourd'hui, "
        "en plus de vous :\n"
        + ("\n".join(lines) if lines else "- personne")
        + f"\n\nPour voir ou retirer une délégation : {page}\n"
        "Si vous n'êtes pas à l'origine de ce changement, retirez la délégation et prévenez la "
        "direction de votre structure."
    )
    portal_mail_send(to=[mailbox], subject="Les délégations de votre BAL ont changé", body=body)


@transaction.atomic
def access_set(
    *,
    mailbox: Mailbox,
    user: User,
    can_organise: bool = False,
    can_send: bool,
    can_manage: bool = False,
    expires_at: datetime | None = None,
    actor: User | None,
    request: HttpRequest | None = None,
) -> MailboxAccess:
    """Give ``user`` rights on ``mailbox`` or change them: a member of an ORG/APP BAL, or a
    delegate of a PER BAL (never « gérer », optionally until ``expires_at``). Reading is
    always part of it; managing implies organising. ``actor`` None: the operator's own
    tooling (traced as « systeme »), for ORG/APP BALs only.

    Raises RightMissing when ``actor`` may not change this BAL's rights (see
    ``_may_change_rights``); ValidationError (French) for a closed BAL, a right given to
    oneself, a person outside the structure, the holder of the PER BAL, a PER BAL whose
    holder has never signed in, or an end date in the past. The holder of a PER BAL gets a
    notice in it.
    """
    mailbox = Mailbox.objects.select_for_update().get(pk=mailbox.pk)
    if mailbox.status == Mailbox.Status.CLOSED:
        raise ValidationError("Cette BAL est fermée.", code="closed")
    _may_change_rights(mailbox, actor)
    if actor is not None and actor.pk == user.pk:
        raise ValidationError(
            "Personne ne peut s'accorder à soi-même des droits sur une BAL : demandez-les à "
            "une autre personne habilitée.",
            code="self",
        )
    if not _member_of(mailbox.structure_id, user):
        raise ValidationError(
            "Cette personne ne fait pas partie de la structure : invitez-la d'abord.",
            code="not_member",
        )
    per = mailbox.kind == Mailbox.Kind.PER
    if per and mailbox.owner_id == user.pk:
        raise ValidationError("Le titulaire a déjà tous les droits sur sa BAL.", code="owner")
    if per and not holder_has_signed_in(mailbox):
        raise ValidationError(
            "Le ou la titulaire ne s'est pas encore connecté·e avec Pro Santé Connect : "
            "personne ne peut utiliser sa BAL avant sa première connexion.",
            code="holder_pending",
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("La date de fin de la délégation est passée.", code="expired")
    kind = MailboxAccess.Kind.DELEGATE if per else MailboxAccess.Kind.MEMBER
    manage = can_manage and not per
    access, created = MailboxAccess.objects.update_or_create(
        mailbox=mailbox,
        user=user,
        defaults={
            "kind": kind,
            "can_read": True,
            "can_organise": can_organise or manage,
            "can_send": can_send,
            "can_manage": manage,
            "expires_at": expires_at if per else None,
            "granted_by": actor,
        },
    )
    audit_record(
        action=Action.ACCESS_GRANTED if created else Action.ACCESS_CHANGED,
        actor=actor,
        actor_label=actor_label_of(actor),
        target=mailbox,
        structure_id=mailbox.structure_id,
        request=request,
        details={
            "user": str(user.public_id),
            "national_id": user.national_id or "",
            "kind": kind,
            "organise": access.can_organise,
            "send": access.can_send,
            "manage": access.can_manage,
            "until": expires_at.isoformat() if expires_at and per else "",
        },
    )
    _holder_told(
        mailbox,
        what=(
            f"{user.display_name} peut maintenant utiliser votre BAL ({access.rights_label})."
            if created
            else f"Les droits de {user.display_name} sont maintenant : {access.rights_label}."
        ),
        actor=actor,
    )
    return access


@transaction.atomic
def access_revoke(
    *, access: MailboxAccess, actor: User, request: HttpRequest | None = None
) -> None:
    """Remove a member or a delegate: from the next request on, the BAL is gone from their
    switcher and its pages answer 404. Raises RightMissing when ``actor`` may not (a
    director may take back a delegation of a PER BAL, to protect it; its holder is told)."""
    mailbox = access.mailbox
    user = access.user
    _may_change_rights(mailbox, actor, revoking=True)
    MailboxAccess.objects.filter(pk=access.pk).delete()
    audit_record(
        action=Action.ACCESS_REVOKED,
        actor=actor,
        target=mailbox,
        structure_id=mailbox.structure_id,
        request=request,
        details={"user": str(user.public_id), "national_id": user.national_id or ""},
    )
    _holder_told(mailbox, what=f"{user.display_name} ne peut plus utiliser votre BAL.", actor=actor)


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
@dataclass(frozen=True)
class InviteLookup:
    """Whom an invitation names: one national id (``known``: the annuaire lists it), or the
    professionals of the annuaire whose name matches when there are several."""

    national_id: str = ""
    known: bool = False
    choices: tuple[tuple[str, str], ...] = ()  # (national id, name and profession)


def invite_lookup(text: str) -> InviteLookup:
    """Read what a director typed to invite someone: an RPPS or ADELI number (its key
    checked: accounts.identifiers.invited_national_id), a national id of another form, or a
    name looked up in the annuaire. Raises ValidationError (French) for a wrong number or a
    name the annuaire does not know."""
    text = text.strip()
    national_id = invited_national_id(text)
    if national_id is None and NATIONAL_ID_RE.match(text) and any(c.isdigit() for c in text):
        national_id = text  # another form of idNat_PS (test identities, RPPS+ ranks)
    if national_id is not None:
        return InviteLookup(national_id, known=directory_professional(national_id) is not None)
    if len(text) < 2 or not any(c.isalpha() for c in text):
        raise ValidationError(
            "Saisissez un nom ou un numéro RPPS (11 chiffres) ou ADELI (9 chiffres).",
            code="national_id",
        )
    found: dict[str, str] = {}
    for entry in directory_per_entries(text, 20):
        name = f"{entry.first_name.title()} {entry.last_name.upper()}".strip()
        where = ", ".join(x for x in (entry.profession_label, entry.structure_name) if x)
        found.setdefault(entry.pp_national_id, f"{name} ({where})" if where else name)
    if not found:
        raise ValidationError(
            f"L'annuaire ne connaît aucun professionnel nommé « {text} » : saisissez son "
            "numéro RPPS ou ADELI.",
            code="unknown_name",
        )
    if len(found) == 1:
        return InviteLookup(next(iter(found)), known=True)
    return InviteLookup(choices=tuple(found.items()))


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
    rights = MailboxAccess.objects.filter(
        mailbox__structure_id=membership.structure_id, user_id=membership.user_id
    )
    delegated = [
        a.mailbox for a in rights.filter(kind=MailboxAccess.Kind.DELEGATE).select_related("mailbox")
    ]
    rights.delete()
    for mailbox in delegated:
        _holder_told(
            mailbox,
            what=(
                f"{membership.user.display_name} ne fait plus partie de la structure : sa "
                "délégation est retirée."
            ),
            actor=actor,
        )
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
