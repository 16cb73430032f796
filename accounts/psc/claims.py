"""Mapping of Pro Santé Connect userinfo claims to our identity model.

Claim names and shapes: ../shared/reference/annuaire-psc-ins.md §B4 and the real documents in
../shared/samples/psc/. Presence varies by environment and date, so everything but
``SubjectNameID`` is optional and parsed defensively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accounts.identifiers import NATIONAL_ID_RE


class ClaimsError(ValueError):
    """The userinfo document cannot identify a professional."""


def _s(value: Any, limit: int = 200) -> str:
    """A claim as a trimmed string ('' for absent, null or non-scalar values)."""
    if isinstance(value, str | int):
        return str(value).strip()[:limit]
    return ""


@dataclass(frozen=True)
class PscActivity:
    profession_code: str
    mode: str
    sector_code: str
    role_code: str
    name: str
    finess_site: str
    finess_legal: str
    siret: str
    technical_id: str
    postal_code: str
    city: str


@dataclass(frozen=True)
class PscExercice:
    profession_code: str
    category_code: str
    civility: str
    last_name: str
    first_name: str
    savoir_faire_type: str
    savoir_faire_code: str


@dataclass(frozen=True)
class PscIdentity:
    national_id: str
    first_name: str
    last_name: str
    civility: str
    auth_mode: str
    exercices: list[PscExercice] = field(default_factory=list)
    activities: list[PscActivity] = field(default_factory=list)

    @property
    def main_exercice(self) -> PscExercice | None:
        return self.exercices[0] if self.exercices else None


def _city(activity: dict[str, Any]) -> str:
    # `bureauCedex` holds "75009 PARIS" or "PARIS" depending on the source (§B4 samples).
    bureau = _s(activity.get("bureauCedex"), 100)
    postal = _s(activity.get("codePostal"), 10)
    if postal and bureau.startswith(postal):
        bureau = bureau[len(postal) :].strip()
    return bureau


def parse_userinfo(claims: dict[str, Any]) -> PscIdentity:
    """Build a ``PscIdentity`` from a userinfo document. Raises ``ClaimsError``."""
    if not isinstance(claims, dict):
        raise ClaimsError("userinfo is not a JSON object")
    national_id = _s(claims.get("SubjectNameID"), 64)
    if not national_id:
        raise ClaimsError("SubjectNameID is missing")
    if not NATIONAL_ID_RE.match(national_id):
        raise ClaimsError("SubjectNameID has an unexpected shape")

    ref_pro = claims.get("SubjectRefPro")
    ref_pro = ref_pro if isinstance(ref_pro, dict) else {}
    raw_exercices = ref_pro.get("exercices")
    raw_exercices = raw_exercices if isinstance(raw_exercices, list) else []

    exercices: list[PscExercice] = []
    activities: list[PscActivity] = []
    for ex in raw_exercices:
        if not isinstance(ex, dict):
            continue
        profession = _s(ex.get("codeProfession"), 8)
        exercices.append(
            PscExercice(
                profession_code=profession,
                category_code=_s(ex.get("codeCategorieProfessionnelle"), 4),
                civility=_s(ex.get("codeCiviliteDexercice"), 8),
                last_name=_s(ex.get("nomDexercice"), 150),
                first_name=_s(ex.get("prenomDexercice"), 150),
                savoir_faire_type=_s(ex.get("codeTypeSavoirFaire"), 4),
                savoir_faire_code=_s(ex.get("codeSavoirFaire"), 16),
            )
        )
        raw_activities = ex.get("activities")
        for act in raw_activities if isinstance(raw_activities, list) else []:
            if not isinstance(act, dict):
                continue
            activities.append(
                PscActivity(
                    profession_code=profession,
                    mode=_s(act.get("codeModeExercice"), 4),
                    sector_code=_s(act.get("codeSecteurDactivite"), 8),
                    role_code=_s(act.get("codeRole"), 8),
                    name=_s(act.get("raisonSocialeSite"), 200)
                    or _s(act.get("enseigneCommercialeSite"), 200),
                    finess_site=_s(act.get("numeroFinessSite"), 9).upper(),
                    finess_legal=_s(act.get("numeroFinessetablissementJuridique"), 9).upper(),
                    siret=_s(act.get("numeroSiretSite"), 14),
                    technical_id=_s(act.get("identifiantTechniqueDeLaStructure"), 32),
                    postal_code=_s(act.get("codePostal"), 10),
                    city=_city(act),
                )
            )

    main = exercices[0] if exercices else None
    # État-civil names first; the exercice names are the fallback (§B4).
    first_name = _s(claims.get("given_name"), 150) or (main.first_name if main else "")
    last_name = _s(claims.get("family_name"), 150) or (main.last_name if main else "")
    # Civility of exercice first, then état-civil, which some documents carry at top level.
    civility = (
        (main.civility if main else "")
        or _s(ref_pro.get("codeCivilite"), 8)
        or _s(claims.get("codeCivilite"), 8)
    )
    return PscIdentity(
        national_id=national_id,
        first_name=first_name,
        last_name=last_name,
        civility=civility,
        auth_mode=_s(claims.get("authMode"), 16),
        exercices=exercices,
        activities=activities,
    )
