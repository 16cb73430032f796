"""Mail HTML made safe to show: an nh3 allowlist, remote content blocked unless asked for.

Two policies live here and nowhere else: where a link may lead (``link_target``: an absolute
http(s), mailto or tel URL, opened in a new tab; ``data:`` only as an image) and which style
properties may stay (``STYLE_PROPERTIES``, none of which takes an image or moves the text over
the page). The result is still served inside a sandboxed iframe with its own strict CSP
(views), so a sanitiser bypass would still have no script and no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup", "dd",
    "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
    "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong", "sub",
    "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
}  # fmt: skip
ATTRIBUTES = {
    "*": {
        "align",
        "valign",
        "dir",
        "lang",
        "title",
        "width",
        "height",
        "bgcolor",
        "color",
        "style",
    },
    "a": {"href", "name"},
    "img": {"src", "alt", "border"},
    "font": {"face", "size"},
    "table": {"border", "cellpadding", "cellspacing"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap"},
    "ol": {"start", "type"},
}
URL_SCHEMES = {"http", "https", "mailto", "tel", "data", "cid"}
# What mail layouts use. Nothing that takes a URL (background, list-style, content, cursor,
# border-image, mask...), positions text over the page (position, top, z-index, transform) or
# hides it behind a fake (opacity, filter, clip-path); names compared as written, so an escaped
# name (« po\73ition ») is simply not in the list.
STYLE_PROPERTIES = {
    "color", "background-color", "direction", "display", "float", "clear", "visibility",
    "font", "font-family", "font-size", "font-style", "font-variant", "font-weight",
    "letter-spacing", "line-height", "text-align", "text-decoration", "text-indent",
    "text-transform", "vertical-align", "white-space", "word-break", "word-spacing",
    "word-wrap", "overflow-wrap",
    "width", "min-width", "max-width", "height", "min-height", "max-height",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left",
    "border-color", "border-style", "border-width", "border-radius",
    "border-top-color", "border-right-color", "border-bottom-color", "border-left-color",
    "border-top-style", "border-right-style", "border-bottom-style", "border-left-style",
    "border-top-width", "border-right-width", "border-bottom-width", "border-left-width",
    "border-collapse", "border-spacing", "caption-side", "empty-cells", "table-layout",
    "list-style-type", "list-style-position",
}  # fmt: skip
REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
# The URL parser of browsers (WHATWG URL §4.4) strips leading and trailing C0 controls and
# spaces and removes every tab and newline; it reads « \ » as « / » in http(s) URLs.
_URL_EDGES = "".join(map(chr, range(0x21)))
_URL_DROPPED = re.compile(r"[\t\n\r]")
_WEB = re.compile(r"^(https?):[/\\]{2,}([^/\\?#@]*@)?[^/\\?#:@]", re.IGNORECASE)
CSS_URL = re.compile(r"url\s*\(|image-set\s*\(|@import|expression\s*\(", re.IGNORECASE)
# CSS escapes (CSS Syntax §4.3.7): « u\72l( » is « url( » to the browser.
CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?|\\(.)", re.DOTALL)
CSS_COMMENT = re.compile(r"/\*.*?(\*/|$)", re.DOTALL)


def _css_unescaped(value: str) -> str:
    """The style text as the browser's tokenizer reads it, for CSS_URL to judge."""

    def one(match: re.Match[str]) -> str:
        if match.group(1):
            code = int(match.group(1), 16)
            return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"
        return match.group(2)

    return CSS_ESCAPE.sub(one, CSS_COMMENT.sub("", value))


def link_target(href: str) -> str | None:
    """Where a link in a message may lead, as the browser will read ``href``, or None: an
    absolute http(s) URL with a host, a mailto: or a tel: URL. Relative and fragment links
    (which would open portal pages), protocol-relative ones, « https:page » (relative to the
    portal too) and every other scheme (javascript:, data:, file:...) lead nowhere."""
    url = _URL_DROPPED.sub("", href.strip(_URL_EDGES))
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if not colon:
        return None
    if scheme in ("mailto", "tel"):
        return f"{scheme}:{rest}" if rest else None
    if _WEB.match(url):
        return scheme + "://" + rest.lstrip("/\\")
    return None


@dataclass(frozen=True)
class SafeHtml:
    html: str
    blocked_remote: int


def sanitize(html: str, *, allow_remote: bool = False) -> SafeHtml:
    """Clean mail HTML. Remote images are removed (and counted) unless ``allow_remote``;
    links follow ``link_target``; a style keeps the properties of STYLE_PROPERTIES and is
    dropped whole when it could fetch (url(), @import), in every case."""
    blocked = 0

    def keep(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        if attr == "style" and CSS_URL.search(_css_unescaped(value)):
            return None
        if tag == "a" and attr == "href":
            return link_target(value)
        if tag == "img" and attr == "src":
            if value.lower().startswith("data:image/"):
                return value
            if REMOTE.match(value):
                if allow_remote and value.lower().startswith("https://"):
                    return value
                blocked += 1
                return None
            return None  # cid: and anything else: not served yet
        if attr == "bgcolor" or attr == "background":
            return value if not REMOTE.match(value) else None
        return value

    cleaned = nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        url_relative="deny",
        filter_style_properties=STYLE_PROPERTIES,
        attribute_filter=keep,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return SafeHtml(html=cleaned, blocked_remote=blocked)
