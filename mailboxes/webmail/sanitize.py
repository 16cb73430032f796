"""Mail HTML made safe to show: an nh3 allowlist, remote content blocked unless asked for.

The result is still served inside a sandboxed iframe with its own strict CSP (views), so a
sanitiser bypass would still have no script and no network.
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
REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
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


@dataclass(frozen=True)
class SafeHtml:
    html: str
    blocked_remote: int


def sanitize(html: str, *, allow_remote: bool = False) -> SafeHtml:
    """Clean mail HTML. Remote images are removed (and counted) unless ``allow_remote``;
    CSS that could fetch (url(), @import) is dropped in every case."""
    blocked = 0

    def keep(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        if attr == "style" and CSS_URL.search(_css_unescaped(value)):
            return None
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
        attribute_filter=keep,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return SafeHtml(html=cleaned, blocked_remote=blocked)
