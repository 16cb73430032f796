"""What the browser tests share: a signed-in Chromium page, without Pro Santé Connect."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.test import Client
from playwright.sync_api import Page

from accounts.decorators import AUTH_AT_SESSION_KEY


def sign_in(page: Page, base_url: str, user: Any, *, recent: bool = True) -> None:
    """Give the page a session for `user`, as right after a Pro Santé Connect sign-in.

    `recent` marks the sign-in as just made (what the console's sensitive actions ask for);
    the page's earlier cookies are dropped, so a test can switch users in one context.
    """
    client = Client()
    client.force_login(user)
    if recent:
        session = client.session
        session[AUTH_AT_SESSION_KEY] = int(time.time())
        session.save()
    page.context.clear_cookies()
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base_url,
            }
        ]
    )
