"""Drive the Pro Santé Connect sign-in over real HTTP, as a browser without JavaScript would:
portal button -> PSC mock authorize page -> identity choice -> callback -> portal."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import requests

DISCOVERY_PATH = "/_dev/psc/auth/realms/esante-wallet/.well-known/wallet-openid-configuration"


class _FormParser(HTMLParser):
    """Collect the fields of the form that holds the identity radios."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action") or "", "fields": {}, "names": set()})
        elif tag == "input" and self.forms:
            form = self.forms[-1]
            name = a.get("name")
            if not name:
                return
            form["names"].add(name)  # type: ignore[attr-defined]
            if a.get("type") in ("hidden",):
                form["fields"][name] = a.get("value") or ""  # type: ignore[index]


@dataclass
class Step:
    session: requests.Session
    response: requests.Response


def start(base_url: str, *, session: requests.Session | None = None, **fields: str) -> Step:
    """Open the portal's sign-in page and press « Se connecter avec Pro Santé Connect »
    (in ``session``, a browser that may already be signed in; ``fields`` are posted too)."""
    s = session or requests.Session()
    page = s.get(f"{base_url}/connexion/", timeout=10)
    page.raise_for_status()
    token = s.cookies["csrftoken"]
    r = s.post(
        f"{base_url}/comptes/psc/connexion/",
        data={"csrfmiddlewaretoken": token, **fields},
        allow_redirects=False,
        timeout=20,
    )
    return Step(s, r)


def choose_identity(
    step: Step, national_id: str, *, auth_mode: str = "card", action: str = "login"
) -> Step:
    """On the mock's authorize page, pick an identity and a means (card / ecps)."""
    s = step.session
    assert step.response.status_code == 302, step.response.text[:500]
    authorize_url = step.response.headers["Location"]
    page = s.get(authorize_url, timeout=10)
    assert page.status_code == 200, page.text[:500]
    parser = _FormParser()
    parser.feed(page.text)
    form = next(f for f in parser.forms if "identity" in f["names"])  # type: ignore[operator]
    data = dict(form["fields"])  # type: ignore[call-overload]
    data.update({"identity": national_id, "auth_mode": auth_mode, "action": action})
    target = urljoin(page.url, str(form["action"]) or page.url)
    r = s.post(target, data=data, allow_redirects=False, timeout=10, headers={"Referer": page.url})
    return Step(s, r)


def follow(step: Step) -> Step:
    """Follow the redirect back to the portal (the callback) and on to the final page."""
    assert step.response.status_code == 302, step.response.text[:500]
    r = step.session.get(step.response.headers["Location"], timeout=30)
    return Step(step.session, r)


def with_query(url: str, *, drop: tuple[str, ...] = (), **changes: str) -> str:
    """``url`` with query parameters changed, and those named in ``drop`` removed."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if k not in drop}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def sign_in(base_url: str, national_id: str, *, auth_mode: str = "card") -> Step:
    return follow(choose_identity(start(base_url), national_id, auth_mode=auth_mode))
