"""HTML fragments of the annuaire built in Python rather than a template: the autocomplete
answers every keystroke, and rendering its ten rows through the template engine (about seventy
nodes, each resolved and escaped) cost more than the search itself (issue 21). Every value
from the directory goes through ``html.escape`` (what Django's ``escape`` does), once, and the
fragment is marked safe only when whole."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from annuaire.search import Suggestion


def _item(number: int, suggestion: Suggestion) -> str:
    # Plain f-strings and escape() rather than format_html: its conditional_escape, format and
    # mark_safe on every value cost as much as the search's SQL (issue 21). Same markup.
    kind = escape(suggestion.bal_type)
    badge = f'<span class="bal-kind bal-kind--{kind.lower()}">{kind}</span> ' if kind else ""
    detail = (
        f' <span class="suggestion__detail">{escape(suggestion.detail)}</span>'
        if suggestion.detail
        else ""
    )
    address = escape(suggestion.address)
    return (
        f'<li role="option" id="suggestion-{number:d}" aria-selected="false">'
        f'<button type="button" class="suggestion" data-address="{address}" tabindex="-1">'
        f"{badge}<strong>{escape(suggestion.label)}</strong>{detail}"
        f'<code class="suggestion__address">{address}</code></button></li>'
    )


def suggestions_html(suggestions: Sequence[Suggestion], text: str) -> SafeString:
    """The autocomplete's list (a listbox of options, each a button carrying its address in
    ``data-address``), or « no address matches » once two letters are typed, or nothing."""
    if suggestions:
        items = "\n".join(_item(i, s) for i, s in enumerate(suggestions, start=1))
        label = escape(_("Suggestions de l’annuaire"))  # noqa: RUF001 (the French apostrophe)
        return mark_safe(  # noqa: S308 (every value above is escaped)
            f'<ul class="suggestions" role="listbox" aria-label="{label}">\n{items}\n</ul>'
        )
    if len(text) >= 2:
        return format_html(
            '<p class="suggestions__empty">{}</p>',
            _("Aucune adresse de l'annuaire ne correspond."),
        )
    return mark_safe("")
