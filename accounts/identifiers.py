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


def invited_national_id(value: str) -> str | None:
    """The idNat_PS of an identifier typed to invite someone, its key checked: an RPPS (11
    digits, Luhn key; §B4) or its idNat_PS (`8` + RPPS), an ADELI (9 digits) or its idNat_PS
    (`0` + ADELI). None when ``value`` is not a number (a name, then). Raises ValidationError
    (French) for a number of the wrong length or a wrong RPPS key."""
    digits = normalize_identifier(value)
    if not digits.isdigit():
        return None
    if len(digits) == 12 and digits.startswith("8"):
        digits = digits[1:]
    elif len(digits) == 10 and digits.startswith("0"):
        return digits
    if len(digits) == 9:
        return "0" + digits
    if len(digits) != 11:
        raise ValidationError(
            _("Un numéro RPPS compte 11 chiffres (un numéro ADELI, 9 chiffres)."),
            code="national_id_format",
        )
    if not luhn_ok(digits):
        raise ValidationError(
            _("La clé du numéro RPPS %(rpps)s est incorrecte : vérifiez le dernier chiffre.")
            % {"rpps": digits},
            code="rpps_key",
        )
    return "8" + digits


def national_id_kind(national_id: str) -> str:
    """RPPS, ADELI, or RPPS+/other, from the idNat_PS prefix (`8`+RPPS, `0`+ADELI; §B4)."""
    if len(national_id) == 12 and national_id.startswith("8") and national_id.isdigit():
        return "RPPS"
    if len(national_id) == 10 and national_id.startswith("0") and national_id.isdigit():
        return "ADELI"
    return "AUTRE"
