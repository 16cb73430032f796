"""The operator's traffic chart as inline SVG drawn on the server (no script, no style
attribute: the strict Content-Security-Policy; shapes get the classes the director's charts
use, coloured by static/css/portal.css). One image for screen readers, described hour by hour."""

from __future__ import annotations

import datetime as dt
import math
import uuid

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 36, 40


def _f(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _step(top: int) -> int:
    raw = max(top / 4, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def hourly_svg(points: list[tuple[dt.datetime, int, int]], *, title: str) -> SafeString:
    """Grouped bars per hour, oldest first: ``points`` are (hour, received, sent)."""
    ref = f"chart-{uuid.uuid4().hex[:10]}"
    local = [(timezone.localtime(h), r, s) for h, r, s in points]
    desc = " ".join(
        _("%(hour)s h : reçus %(received)s, envoyés %(sent)s.")
        % {"hour": f"{h:%H}", "received": r, "sent": s}
        for h, r, s in local
        if r or s
    ) or _("Aucun message sur la période")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{ref}-title {ref}-desc">',
        f'<title id="{ref}-title">{escape(title)}</title>',
        f'<desc id="{ref}-desc">{escape(desc)}</desc>',
    ]
    top_value = max([max(r, s) for _h, r, s in local] + [1])
    step = _step(top_value)
    ymax = step * math.ceil(top_value / step)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = TOP + plot_h

    def y(value: int) -> float:
        return base - value / ymax * plot_h

    for i, (css, label) in enumerate(
        (("chart-received", _("Reçus")), ("chart-sent", _("Envoyés")))
    ):
        lx = LEFT + i * 110
        parts.append(f'<rect class="{css}" x="{lx}" y="10" width="12" height="12"/>')
        parts.append(f'<text class="chart-label" x="{lx + 18}" y="20">{escape(label)}</text>')
    for tick in range(0, ymax + 1, step):
        ty = _f(y(tick))
        parts.append(
            f'<line class="chart-axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty}" y2="{ty}"/>'
        )
        parts.append(
            f'<text class="chart-label" x="{LEFT - 6}" y="{_f(y(tick) + 4)}" '
            f'text-anchor="end">{tick}</text>'
        )
    group = plot_w / max(len(local), 1)
    bar = min(12.0, group * 0.4)
    for i, (hour, received, sent) in enumerate(local):
        cx = LEFT + group * (i + 0.5)
        for x, value, css, label in (
            (cx - bar, received, "chart-received", _("reçus")),
            (cx, sent, "chart-sent", _("envoyés")),
        ):
            tip = f"{hour:%H} h : {value} {label}"
            parts.append(
                f'<rect class="{css}" x="{_f(x)}" y="{_f(y(value))}" width="{_f(bar)}" '
                f'height="{_f(base - y(value))}"><title>{escape(tip)}</title></rect>'
            )
        if i % 3 == 0:
            parts.append(
                f'<text class="chart-label" x="{_f(cx)}" y="{base + 18}" '
                f'text-anchor="middle">{hour:%H} h</text>'
            )
    parts.append(f'<line class="chart-axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{base}"/>')
    # Safe: our own markup with numbers, and every text passed through escape().
    return mark_safe("".join(parts) + "</svg>")  # noqa: S308
