"""Labels of the national code systems shown to people (NOS, mos.esante.gouv.fr).

Only the codes we are sure of are labelled; an unknown code is shown as such rather than
guessed. TRE_G15 (professions), TRE_R38 (spécialités ordinales), TRE_R23 (modes d'exercice).
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

# TRE_G15-ProfessionSante
PROFESSIONS = {
    "10": gettext_lazy("Médecin"),
    "21": gettext_lazy("Pharmacien"),
    "26": gettext_lazy("Audioprothésiste"),
    "28": gettext_lazy("Opticien-lunetier"),
    "40": gettext_lazy("Chirurgien-dentiste"),
    "50": gettext_lazy("Sage-femme"),
    "60": gettext_lazy("Infirmier"),
    "69": gettext_lazy("Infirmier psychiatrique"),
    "70": gettext_lazy("Masseur-kinésithérapeute"),
    "80": gettext_lazy("Pédicure-podologue"),
    "81": gettext_lazy("Orthoprothésiste"),
    "82": gettext_lazy("Podo-orthésiste"),
    "83": gettext_lazy("Orthopédiste-orthésiste"),
    "84": gettext_lazy("Oculariste"),
    "85": gettext_lazy("Épithésiste"),
    "86": gettext_lazy("Technicien de laboratoire médical"),
    "91": gettext_lazy("Orthophoniste"),
    "92": gettext_lazy("Orthoptiste"),
    "94": gettext_lazy("Ergothérapeute"),
    "95": gettext_lazy("Diététicien"),
    "96": gettext_lazy("Psychomotricien"),
    "98": gettext_lazy("Manipulateur ERM"),
}

# TRE_R38-SpecialiteOrdinale (the few used by our samples and demo identities).
SAVOIR_FAIRE = {
    "SM26": gettext_lazy("Qualifié en médecine générale"),
    "SM53": gettext_lazy("Spécialiste en médecine générale"),
    "SM54": gettext_lazy("Médecine générale"),
}

# TRE_R23-ModeExercice
MODES = {
    "L": gettext_lazy("Libéral"),
    "S": gettext_lazy("Salarié"),
    "B": gettext_lazy("Bénévole"),
}


def profession_label(code: str) -> str:
    if not code:
        return ""
    label = PROFESSIONS.get(code)
    return str(label) if label else _("Profession (code %(code)s)") % {"code": code}


def savoir_faire_label(code: str) -> str:
    if not code:
        return ""
    label = SAVOIR_FAIRE.get(code)
    return str(label) if label else _("Savoir-faire %(code)s") % {"code": code}


def mode_label(code: str) -> str:
    return str(MODES.get(code, code))
