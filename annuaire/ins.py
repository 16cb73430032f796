"""The patient's INS matricule and the Mon Espace Santé address built from it
(../shared/reference/annuaire-psc-ins.md §C, mssante-spec §3.7).

The key (97 - NIR mod 97, with 2A -> 19 and 2B -> 18 at positions 6-7) is checked by
python-stdnum's ``fr.nir``. The summary decoded from the matricule is what the sender confirms
before writing to a patient (« Une femme, née en mars 1985, née dans le département 77 »), so
that a typo that happens to have a valid key is still caught by a human.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils import timezone
from stdnum.fr import nir

PATIENT_DOMAIN = "patient.mssante.fr"
MONTHS = [
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
]  # fmt: skip
_CLEAN = re.compile(r"[\s.-]")


class InvalidINS(ValueError):
    """French message for the person who typed it."""


@dataclass(frozen=True)
class INS:
    matricule: str

    @property
    def address(self) -> str:
        return f"{self.matricule}@{PATIENT_DOMAIN}"

    @property
    def temporary(self) -> bool:
        return self.matricule[0] in "78"  # NIA / temporary numbers

    def summary(self) -> str:
        """« Une femme, née en mars 1985, née dans le département 77 »."""
        sex = self.matricule[0]
        female = sex in "28"
        person = "Une femme" if female else "Un homme"
        born = "née" if female else "né"
        yy, mm, dept = int(self.matricule[1:3]), int(self.matricule[3:5]), self.matricule[5:7]
        year = 2000 + yy if 2000 + yy <= timezone.localdate().year else 1900 + yy
        when = f"{born} en {MONTHS[mm - 1]} {year}" if 1 <= mm <= 12 else f"{born} en {year}"
        if dept == "99":
            where = f"{born} à l'étranger (pays {self.matricule[7:10]})"
        elif dept in ("97", "98"):
            where = f"{born} outre-mer (département {self.matricule[5:8]})"
        else:
            where = f"{born} dans le département {dept}"
        return f"{person}, {when}, {where}"


def parse_ins(value: str) -> INS:
    """A matricule INS (15 characters, spaces and dots allowed) or raise InvalidINS."""
    compact = _CLEAN.sub("", value or "").upper()
    if len(compact) != 15:
        raise InvalidINS("Le matricule INS compte 15 caractères (13 + clé de 2 chiffres).")
    if compact[0] not in "1278":
        raise InvalidINS("Le matricule INS commence par 1, 2, 7 ou 8.")
    try:
        nir.validate(compact)
    except Exception as exc:  # stdnum's ValidationError family
        raise InvalidINS(
            "La clé du matricule INS ne correspond pas : vérifiez chaque chiffre."
        ) from exc
    return INS(compact)


_SEPARATORS = re.compile(r"[,;\n]+")


def typed_ins(value: str) -> list[str]:
    """The INS typed in the compose field, one per comma, semicolon or line, each as printed
    on documents (« 2 79 03 51 215 189 89 ») and compacted; empty entries dropped. Several
    patients per message are allowed: the référentiel has no rule against it (Ref#2 v0.1
    even removed EX_DC_1.1, which forbade mixing a patient and professionals; mssante-spec
    §2.1, §3.7)."""
    return [
        c for c in (_CLEAN.sub("", part).upper() for part in _SEPARATORS.split(value or "")) if c
    ]


def patient_address(address: str) -> INS | None:
    """The INS of an address at Mon Espace Santé, None for any other address; raises
    InvalidINS for a patient address whose local part is not a valid matricule."""
    local, _, domain = address.strip().rpartition("@")
    if domain.lower() != PATIENT_DOMAIN:
        return None
    return parse_ins(local)
