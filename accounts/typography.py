"""French typography shared by views and templates (issue 19)."""

from __future__ import annotations

from django.utils.formats import number_format
from django.utils.translation import ngettext

_UNITS = ("Ko", "Mo", "Go", "To")


def octets(size: int | float | None) -> str:
    """A size as French users read it: « 1 octet », « 340 octets », « 12 Ko », « 1,5 Mo ».

    Multiples of 1 024 written Ko/Mo/Go, as French mail clients and the référentiel's quotas
    do (not Django's « Kio/Mio »), with a decimal comma and a non-breaking space."""
    if size is None:
        return "—"
    value = float(size)
    if value < 1024:
        count = int(value)
        # French takes the singular for 0 and 1 (« 0 octet »), whatever the active language.
        return ngettext("%(n)s octet", "%(n)s octets", 2 if count > 1 else 1) % {"n": count}
    rank = 0
    value /= 1024
    while value >= 1024 and rank < len(_UNITS) - 1:
        value /= 1024
        rank += 1
    unit = _UNITS[rank]
    places = 0 if value >= 10 or value == int(value) else 1
    return f"{number_format(round(value, places), places)}\u00a0{unit}"


_VOWELS = frozenset("aeiouyàâäéèêëîïôöùûüÿœæ")


def elide_de(name: str) -> str:
    """« de Claire MARTIN », « d'Aurélie LEROY », « d'accueil@ehpad.mssante.fr »."""
    return f"d'{name}" if name[:1].lower() in _VOWELS else f"de {name}"
