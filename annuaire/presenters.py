"""HTML fragments of the annuaire built in Python rather than a template: the autocomplete
answers every keystroke, and rendering its ten rows through the template engine (about seventy
nodes, each resolved and escaped) cost more than the search itself (issue 21). Every value
goes through ``format_html``, which escapes it."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from annuaire.search import Suggestion

_ITEM = (
    '<li role="option" id="suggestion-{}" aria-selected="false">'
    '<button type="button" class="suggestion" data-address="{}" tabindex="-1">'
    '{}<strong>{}</strong>{}<code class="suggestion__address">{}</code></button></li>'
)


def _item(number: int, suggestion: Suggestion) -> tuple[object, ...]:
    kind = suggestion.bal_type
    badge = (
        format_html('<span class="bal-kind bal-kind--{}">{}</span> ', kind.lower(), kind)
        if kind
        else ""
    )
    detail = (
        format_html(' <span class="suggestion__detail">{}</span>', suggestion.detail)
        if suggestion.detail
        else ""
    )
    return (number, suggestion.address, badge, suggestion.label, detail, suggestion.address)


def suggestions_html(suggestions: Sequence[Suggestion], text: str) -> SafeString:
    """The autocomplete's list (a listbox of options, each a button carrying its address in
    ``data-address``), or « no address matches » once two letters are typed, or nothing."""
    if suggestions:
        items = format_html_join(
            "\n", _ITEM, (_item(i, s) for i, s in enumerate(suggestions, start=1))
        )
        return format_html(
            '<ul class="suggestions" role="listbox" aria-label="{}">\n{}\n</ul>',
            _("Suggestions de l’annuaire"),  # noqa: RUF001 (the French apostrophe)
            items,
        )
    if len(text) >= 2:
        return format_html(
            '<p class="suggestions__empty">{}</p>',
            _("Aucune adresse de l'annuaire ne correspond."),
        )
    return mark_safe("")
