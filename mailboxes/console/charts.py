"""Usage charts as inline SVG, drawn on the server (presentation only: no database).

The Content-Security-Policy allows styles from our stylesheet only, so nothing here carries a
``style`` attribute or a script: shapes get classes (``chart-received``, ``chart-sent``,
``chart-bar``, ``chart-axis``, ``chart-label``) coloured by static/css/portal.css. Every text
comes from data or translations and is escaped. For screen readers, each chart is one image
(``role="img"``) named by its ``<title>`` and described, figure by figure, by its ``<desc>``;
each bar has its own ``<title>`` as a tooltip.
"""

from __future__ import annotations

import math
import uuid
from datetime import date

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext_lazy

WIDTH = 720
_LABEL_CHARS = 32  # partner names longer than this are cut (the tooltip keeps the full name)

_SHORT_MONTHS = (
    pgettext_lazy("mois abrégé", "janv."),
    pgettext_lazy("mois abrégé", "févr."),
    pgettext_lazy("mois abrégé", "mars"),
    pgettext_lazy("mois abrégé", "avr."),
    pgettext_lazy("mois abrégé", "mai"),
    pgettext_lazy("mois abrégé", "juin"),
    pgettext_lazy("mois abrégé", "juil."),
    pgettext_lazy("mois abrégé", "août"),
    pgettext_lazy("mois abrégé", "sept."),
    pgettext_lazy("mois abrégé", "oct."),
    pgettext_lazy("mois abrégé", "nov."),
    pgettext_lazy("mois abrégé", "déc."),
)
_MONTHS = (
    pgettext_lazy("mois", "janvier"),
    pgettext_lazy("mois", "février"),
    pgettext_lazy("mois", "mars"),
    pgettext_lazy("mois", "avril"),
    pgettext_lazy("mois", "mai"),
    pgettext_lazy("mois", "juin"),
    pgettext_lazy("mois", "juillet"),
    pgettext_lazy("mois", "août"),
    pgettext_lazy("mois", "septembre"),
    pgettext_lazy("mois", "octobre"),
    pgettext_lazy("mois", "novembre"),
    pgettext_lazy("mois", "décembre"),
)


def month_label(month: date) -> str:
    """« janv. 2026 »"""
    return f"{_SHORT_MONTHS[month.month - 1]} {month.year}"


def month_name(month: date) -> str:
    """« janvier 2026 »"""
    return f"{_MONTHS[month.month - 1]} {month.year}"


def number(value: int) -> str:
    """French digit grouping with a narrow no-break space: « 12 345 »."""
    return f"{value:,}".replace(",", "\u202f")


def _f(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _step(top: int) -> int:
    """A round tick step (1, 2 or 5 times a power of ten) giving at most about five ticks."""
    raw = max(top / 4, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _open(title: str, desc: str, height: int) -> list[str]:
    ref = f"chart-{uuid.uuid4().hex[:10]}"
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-labelledby="{ref}-title {ref}-desc">',
        f'<title id="{ref}-title">{escape(title)}</title>',
        f'<desc id="{ref}-desc">{escape(desc)}</desc>',
    ]


def _close(parts: list[str]) -> SafeString:
    # Safe: our own markup with numbers, and every text passed through escape().
    return mark_safe("".join(parts) + "</svg>")  # noqa: S308


def _empty(title: str) -> SafeString:
    message = _("Aucun message sur la période")
    parts = _open(title, message, 60)
    parts.append(
        f'<text class="chart-label" x="{WIDTH // 2}" y="35" text-anchor="middle">'
        f"{escape(message)}</text>"
    )
    return _close(parts)


def usage_bars_svg(points: list[tuple[date, int, int]], *, title: str) -> SafeString:
    """Grouped bars, messages received and sent per month, oldest month first.

    ``points`` are (first day of the month, received, sent). With no message at all on the
    period, the chart is a short sentence saying so.
    """
    if not points or not any(received or sent for _month, received, sent in points):
        return _empty(title)
    height, left, right, top, bottom = 300, 56, 16, 40, 64
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    step = _step(max(max(r, s) for _m, r, s in points))
    ymax = step * math.ceil(max(max(r, s) for _m, r, s in points) / step)

    def y(value: int) -> float:
        return top + plot_h - value / ymax * plot_h

    summary = " ".join(
        _("%(month)s : reçus %(received)s, envoyés %(sent)s.")
        % {"month": month_label(m), "received": number(r), "sent": number(s)}
        for m, r, s in points
    )
    parts = _open(title, summary, height)

    legend = (("chart-received", _("Reçus")), ("chart-sent", _("Envoyés")))
    for i, (css, label) in enumerate(legend):  # top left
        lx = left + i * 110
        parts.append(f'<rect class="{css}" x="{lx}" y="12" width="12" height="12"/>')
        parts.append(f'<text class="chart-label" x="{lx + 18}" y="22">{escape(label)}</text>')

    # Y axis: round ticks as grid lines.
    for tick in range(0, ymax + 1, step):
        ty = _f(y(tick))
        parts.append(
            f'<line class="chart-axis" x1="{left}" x2="{WIDTH - right}" y1="{ty}" y2="{ty}"/>'
        )
        parts.append(
            f'<text class="chart-label" x="{left - 8}" y="{_f(y(tick) + 4)}" text-anchor="end">'
            f"{escape(number(tick))}</text>"
        )

    group = plot_w / len(points)
    bar = min(28.0, group * 0.36)
    rotate = len(points) > 6  # twelve labels side by side would overlap
    base = top + plot_h
    for i, (month, received, sent) in enumerate(points):
        cx = left + group * (i + 0.5)
        for x, value, css, tip in (
            (
                cx - bar - 1,
                received,
                "chart-received",
                ngettext(
                    "%(n)s message reçu en %(month)s",
                    "%(n)s messages reçus en %(month)s",
                    received,
                ),
            ),
            (
                cx + 1,
                sent,
                "chart-sent",
                ngettext(
                    "%(n)s message envoyé en %(month)s",
                    "%(n)s messages envoyés en %(month)s",
                    sent,
                ),
            ),
        ):
            tooltip = tip % {"n": number(value), "month": month_name(month)}
            parts.append(
                f'<rect class="{css}" x="{_f(x)}" y="{_f(y(value))}" width="{_f(bar)}" '
                f'height="{_f(base - y(value))}"><title>{escape(tooltip)}</title></rect>'
            )
        ly = base + 18
        if rotate:
            parts.append(
                f'<text class="chart-label" x="{_f(cx)}" y="{ly}" text-anchor="end" '
                f'transform="rotate(-40 {_f(cx)} {ly})">{escape(month_label(month))}</text>'
            )
        else:
            parts.append(
                f'<text class="chart-label" x="{_f(cx)}" y="{ly}" text-anchor="middle">'
                f"{escape(month_label(month))}</text>"
            )
    parts.append(f'<line class="chart-axis" x1="{left}" x2="{left}" y1="{top}" y2="{base}"/>')
    return _close(parts)


def top_bars_svg(items: list[tuple[str, int]], *, title: str) -> SafeString:
    """Horizontal bars for the main partner domains or structures, in the order given (largest
    first, as the selectors return them). Items without messages are left out."""
    items = [(name, n) for name, n in items if n > 0]
    if not items:
        return _empty(title)
    row, label_w, value_w = 26, 280, 70
    height = 8 + row * len(items) + 8
    bar_area = WIDTH - label_w - value_w
    largest = max(n for _name, n in items)

    def tip(name: str, n: int) -> str:
        return ngettext("%(name)s : %(n)s message", "%(name)s : %(n)s messages", n) % {
            "name": name,
            "n": number(n),
        }

    parts = _open(title, " ; ".join(tip(name, n) for name, n in items) + ".", height)
    for i, (name, n) in enumerate(items):
        top = 8 + i * row
        width = max(1.0, n / largest * bar_area)
        shown = name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1].rstrip() + "…"
        parts.append(f"<g><title>{escape(tip(name, n))}</title>")
        parts.append(f'<text class="chart-label" x="0" y="{top + 17}">{escape(shown)}</text>')
        parts.append(
            f'<rect class="chart-bar" x="{label_w}" y="{top + 5}" width="{_f(width)}" height="16"/>'
        )
        parts.append(
            f'<text class="chart-label" x="{_f(label_w + width + 6)}" y="{top + 17}">'
            f"{escape(number(n))}</text></g>"
        )
    return _close(parts)
