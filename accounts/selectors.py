"""Reads and access checks of the accounts app."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import Activity, Membership, Structure, User
from accounts.nomenclatures import mode_label, profession_label, savoir_faire_label


@dataclass(frozen=True)
class ActivityRow:
    name: str
    place: str
    mode: str
    identifier: str
    hosted: bool
    role: str


@dataclass(frozen=True)
class HomeProfile:
    display_name: str
    civility: str
    national_id: str
    profession: str
    savoir_faire: str
    auth_mode: str
    activities: list[ActivityRow]
    memberships: list[Membership]


AUTH_MODES = {"CARD": "Carte CPS", "MOBILE": "e-CPS"}


def user_display(user: User) -> str:
    """How allauth names a person in its messages (« Connexion avec … réussie »)."""
    return user.display_name


def home_profile(user: User) -> HomeProfile:
    """What the home page shows of a signed-in professional: identity and where they work."""
    memberships = list(
        Membership.objects.filter(user=user).select_related("structure").order_by("structure__name")
    )
    roles = {m.structure_id: m.get_role_display() for m in memberships}
    rows = []
    for act in Activity.objects.filter(user=user).order_by("position"):
        identifier = (
            f"FINESS {act.finess_site}"
            if act.finess_site
            else f"SIRET {act.siret}"
            if act.siret
            else f"FINESS EJ {act.finess_legal}"
            if act.finess_legal
            else ""
        )
        rows.append(
            ActivityRow(
                name=act.name,
                place=" ".join(p for p in (act.postal_code, act.city) if p),
                mode=mode_label(act.mode),
                identifier=identifier,
                hosted=act.structure_id is not None,
                role=str(roles.get(act.structure_id, "")) if act.structure_id else "",
            )
        )
    return HomeProfile(
        display_name=user.display_name,
        civility="Dr" if user.civility == "DR" else "",
        national_id=user.national_id or "",
        profession=profession_label(user.profession_code),
        savoir_faire=savoir_faire_label(user.savoir_faire_code),
        auth_mode=AUTH_MODES.get(user.last_auth_mode, user.last_auth_mode),
        activities=rows,
        memberships=memberships,
    )


def administered_structures(user: User) -> list[Structure]:
    """The structures whose console and journal this person may see: those they direct;
    every structure for the operator's staff (a professional account marked staff)."""
    if not user.is_authenticated or not user.national_id:
        return []
    if user.is_staff:
        return list(Structure.objects.order_by("name"))
    return directed_structures(user)


def administers(user: User, structure_id: int) -> bool:
    """Whether the structure ``structure_id`` is one of ``administered_structures(user)``: one
    EXISTS query (none for staff) rather than reading them all."""
    if not user.is_authenticated or not user.national_id:
        return False
    if user.is_staff:
        return True
    return Membership.objects.filter(
        user=user, role=Membership.Role.DIRECTOR, structure_id=structure_id
    ).exists()


def directed_structures(user: User) -> list[Structure]:
    """The structures this person directs (the console's scope)."""
    return list(
        Structure.objects.filter(
            memberships__user=user, memberships__role=Membership.Role.DIRECTOR
        ).order_by("name")
    )
