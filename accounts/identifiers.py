"""National identifiers: FINESS, SIRET, idNat_PS.

Source: ../shared/reference/annuaire-psc-ins.md §B4 and §D.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

FINESS_RE = re.compile(r"^(?:\d{2}|2[AB])\d{7}$")
# PSC test ("bac à sable") data uses letters in FINESS numbers (`0B0193488`, §D).
FINESS_TEST_RE = re.compile(r"^[0-9A-Z]{9}$")
SIRET_RE = re.compile(r"^\d{14}$")


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) check over a string of digits, the last one being the key."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def normalize_identifier(value: str) -> str:
    return re.sub(r"[\s.\-]", "", value or "").upper()


def validate_finess(value: str) -> str:
    """Return the normalised FINESS or raise ValidationError (French message).

    The key digit behaves as Luhn on every real numeric FINESS (reference §D, [I]); Corsican
    numbers (2A/2B) have no documented key rule, so only their shape is checked.
    """
    finess = normalize_identifier(value)
    if not FINESS_RE.match(finess):
        raise ValidationError(
            _("Un numéro FINESS compte 9 caractères : département (ou 2A/2B) puis 7 chiffres."),
            code="finess_format",
        )
    if finess.isdigit() and not luhn_ok(finess):
        raise ValidationError(
            _("La clé du numéro FINESS %(finess)s est incorrecte : vérifiez le dernier chiffre.")
            % {"finess": finess},
            code="finess_key",
        )
    return finess


def validate_siret(value: str) -> str:
    siret = normalize_identifier(value)
    if not SIRET_RE.match(siret):
        raise ValidationError(_("Un numéro SIRET compte 14 chiffres."), code="siret_format")
    # La Poste's establishments (SIREN 356000000) use a sum-of-digits rule instead of Luhn.
    if not luhn_ok(siret) and not (siret.startswith("356000000") and sum(map(int, siret)) % 5 == 0):
        raise ValidationError(
            _("La clé du numéro SIRET %(siret)s est incorrecte.") % {"siret": siret},
            code="siret_key",
        )
    return siret


NATIONAL_ID_RE = re.compile(r"^[0-9A-Za-z/]{6,64}$")


def national_id_kind(national_id: str) -> str:
    """RPPS, ADELI, or RPPS+/other, from the idNat_PS prefix (`8`+RPPS, `0`+ADELI; §B4)."""
    if len(national_id) == 12 and national_id.startswith("8") and national_id.isdigit():
        return "RPPS"
    if len(national_id) == 10 and national_id.startswith("0") and national_id.isdigit():
        return "ADELI"
    return "AUTRE"
