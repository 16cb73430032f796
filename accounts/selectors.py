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


def directed_structure_ids(user: User) -> frozenset[int]:
    """The ids of the structures this person directs, read once per ``User`` instance (in a
    request, its user: the header's console link and the page's own checks share one query;
    like Django's permission cache on the user, it lives as long as that request)."""
    known = getattr(user, "_directed_structure_ids", None)
    if known is None:
        known = frozenset(
            Membership.objects.filter(user=user, role=Membership.Role.DIRECTOR).values_list(
                "structure_id", flat=True
            )
        )
        user._directed_structure_ids = known  # type: ignore[attr-defined]
    return known


def administers(user: User, structure_id: int) -> bool:
    """Whether the structure ``structure_id`` is one of ``administered_structures(user)``,
    without reading those structures (``directed_structure_ids``; no query for staff)."""
    if not user.is_authenticated or not user.national_id:
        return False
    return user.is_staff or structure_id in directed_structure_ids(user)


def directed_structures(user: User) -> list[Structure]:
    """The structures this person directs (the console's scope)."""
    return list(
        Structure.objects.filter(
            memberships__user=user, memberships__role=Membership.Role.DIRECTOR
        ).order_by("name")
    )
