"""Template filters for French typography (issue 19): words where the UI showed codes."""

from __future__ import annotations

from django import template
from django.utils.translation import gettext_lazy as _

from accounts.typography import elide_de, octets

register = template.Library()

# The three kinds of BAL (Référentiel #1, « BAL personnelle / organisationnelle /
# applicative »), as the annuaire and our models code them.
_BAL_KINDS = {
    "PER": _("personnelle"),
    "ORG": _("organisationnelle"),
    "APP": _("applicative"),
}


@register.filter
def bal_kind(code: object) -> str:
    """« personnelle », « organisationnelle » or « applicative » for PER, ORG or APP; any
    other value is shown as it is."""
    text = str(code or "")
    return str(_BAL_KINDS.get(text.upper(), text))


@register.filter(name="octets")
def octets_filter(size: int | float | None) -> str:
    """A size in octets, Ko, Mo or Go with a decimal comma (accounts.typography.octets)."""
    return octets(size)


@register.filter
def de(name: object) -> str:
    """« de Claire » but « d'Aurélie », « d'accueil@… »: French elides « de » before a vowel
    (a mute h is not guessed: « de Hélène » stays as written)."""
    return elide_de(str(name))
