from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def portal(request: HttpRequest) -> dict[str, object]:
    """Values every page needs: which mode runs (shown as a banner outside production)."""
    return {
        "portal_env": settings.PORTAL_ENV,
        "psc_mock_enabled": settings.PSC_MOCK_ENABLED,
    }
