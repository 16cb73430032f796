from __future__ import annotations

import copy
import socket
from collections.abc import Callable

import pytest

from tests.accounts.psc_flow import DISCOVERY_PATH


def _point_psc_at(settings: pytest.FixtureRequest, discovery_url: str) -> None:
    providers = copy.deepcopy(settings.SOCIALACCOUNT_PROVIDERS)  # type: ignore[attr-defined]
    providers["prosanteconnect"]["APPS"][0]["settings"]["server_url"] = discovery_url
    settings.SOCIALACCOUNT_PROVIDERS = providers  # type: ignore[attr-defined]
    settings.PSC_DISCOVERY_URL = discovery_url  # type: ignore[attr-defined]


@pytest.fixture
def psc_live(live_server, settings) -> str:
    """The portal and its PSC mock served over real HTTP; the OIDC client points at the mock.

    Returns the base URL."""
    settings.PSC_MOCK_FAULT = ""
    settings.PSC_MOCK_USERINFO_FORMAT = "json"
    _point_psc_at(settings, f"{live_server.url}{DISCOVERY_PATH}")
    return str(live_server.url)


@pytest.fixture
def psc_unreachable(settings) -> Callable[[], None]:
    """Point the OIDC client at a local port where nothing listens."""

    def apply() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        _point_psc_at(settings, f"http://127.0.0.1:{port}{DISCOVERY_PATH}")

    return apply
