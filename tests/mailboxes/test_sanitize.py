"""The link and style policy of mail HTML (mailboxes/webmail/sanitize.py): a link opens only an
absolute http(s), mailto or tel target, in a new tab; ``data:`` only for images; style properties
from an allow-list, nothing that fetches."""

from __future__ import annotations

import re

import pytest

from mailboxes.webmail.sanitize import sanitize


def _hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]*)"', sanitize(html).html)


@pytest.mark.parametrize(
    "href",
    [
        "/bal/",  # a portal URL
        "/logout/",
        "page.html",
        "./page.html",
        "../../admin/",
        "?dossier=Trash",
        "",
        "#haut",
        "#",
        "//attacker.invalid/x",  # protocol-relative: another host with the portal's scheme
        "\\\\attacker.invalid/x",
        "/\\attacker.invalid/x",
        "https:/bal/",  # same scheme as the page, no authority: relative to the portal
        "https:bal/",
        "http:",
        "https://",
        "javascript:alert(1)",
        " javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "java&#x09;script:alert(1)",
        "java&#10;script:alert(1)",
        "&#106;avascript:alert(1)",
        "javascript&colon;alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "data:image/png;base64,iVBORw0KGgo=",  # an image, but as a link target
        "cid:part1@exemple",
        "file:///etc/passwd",
        "ftp://attacker.invalid/",
        "blob:https://portail/1",
    ],
)
def test_a_link_that_does_not_leave_for_an_absolute_target_leads_nowhere(href: str) -> None:
    html = sanitize(f'<p><a href="{href}">lien</a> texte</p>').html

    assert "href" not in html
    assert ">lien</a> texte" in html  # the text stays readable


@pytest.mark.parametrize(
    ("href", "kept"),
    [
        ("https://www.has-sante.fr/reco", "https://www.has-sante.fr/reco"),
        ("http://exemple.fr/a?b=1&amp;c=2#d", "http://exemple.fr/a?b=1&amp;c=2#d"),
        ("HTTPS://Exemple.FR/x", "https://Exemple.FR/x"),
        ("  https://exemple.fr/x  ", "https://exemple.fr/x"),
        ("ht\ttps://exemple.fr/x", "https://exemple.fr/x"),  # the browser drops tabs too
        ("https:\\\\exemple.fr\\x", "https://exemple.fr\\x"),
        ("mailto:secretariat@ch-reims.mssante.fr", "mailto:secretariat@ch-reims.mssante.fr"),
        ("tel:+33326000000", "tel:+33326000000"),
    ],
)
def test_absolute_web_mail_and_phone_links_open_in_a_new_tab(href: str, kept: str) -> None:
    html = sanitize(f'<a href="{href}" target="_self" rel="opener">lien</a>').html

    assert _hrefs(f'<a href="{href}">lien</a>') == [kept]
    assert 'target="_blank"' in html and "_self" not in html
    assert 'rel="noopener noreferrer nofollow"' in html and 'rel="opener"' not in html


@pytest.mark.parametrize(
    ("src", "shown"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", True),
        ("DATA:image/gif;base64,R0lGOD==", True),
        ("data:text/html;base64,PHNjcmlwdD4=", False),
        ("data:image/svg+xml;base64,PHN2Zz4=", True),  # in <img>: no script, no fetch
        ("/bal/", False),
        ("//attacker.invalid/p.gif", False),
        ("javascript:alert(1)", False),
        ("cid:part1@exemple", False),
    ],
)
def test_data_urls_only_for_images(src: str, shown: bool) -> None:
    html = sanitize(f'<img src="{src}" alt="x">').html

    assert ("src=" in html) is shown


@pytest.mark.parametrize(
    "declaration",
    [
        "position:fixed",
        "position:absolute",
        "top:0",
        "left:0",
        "z-index:9999",
        "background-image:linear-gradient(red,blue)",
        "list-style-image:none",
        "content:'faux'",
        "cursor:pointer",
        "behavior:something",
        "-moz-binding:none",
        "transform:scale(50)",
        "opacity:0.01",
        "mask:none",
        "clip-path:none",
        "filter:blur(2px)",
        "animation:x 1s",
        "--x:1",
        "po\\73ition:fixed",  # an escaped name is not the allowed one
    ],
)
def test_style_properties_outside_the_allow_list_are_dropped(declaration: str) -> None:
    html = sanitize(f'<p style="{declaration};color:#c00">texte</p>').html

    assert html == '<p style="color:#c00">texte</p>'


def test_mail_layout_properties_are_kept() -> None:
    style = (
        "color:#333333;background-color:#ffffff;font-family:Arial, sans-serif;font-size:12pt;"
        "font-weight:bold;text-align:center;margin:0 auto;padding:4px 8px;border:1px solid #ccc;"
        "border-collapse:collapse;width:600px;max-width:100%;line-height:1.4;vertical-align:top"
    )

    html = sanitize(f'<table style="{style}"><tr><td>x</td></tr></table>').html

    kept = re.search(r'style="([^"]*)"', html)
    assert kept is not None
    names = [d.split(":")[0] for d in kept.group(1).split(";")]
    assert names == [d.split(":")[0] for d in style.split(";")]


@pytest.mark.parametrize(
    "style",
    [
        "color:url(https://attacker.invalid/a.png)",
        "border:1px solid red;background-color:url('https://attacker.invalid/a')",
        "font-family:u\\72l(https://attacker.invalid/f)",
        "width:expression(alert(1))",
        "color:red;@import 'https://attacker.invalid/a.css'",
    ],
)
def test_a_style_that_could_fetch_is_dropped_even_in_allowed_properties(style: str) -> None:
    html = sanitize(f'<p style="{style}">x</p>').html

    assert html == "<p>x</p>"
