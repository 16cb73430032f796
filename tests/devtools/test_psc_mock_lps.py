"""The PSC mock's second client, « logiciel métier de test »: authorization code, refresh,
revoke and introspection over real HTTP (live server), answering like the real PSC."""

from __future__ import annotations

import pytest
import requests
from django.conf import settings
from django.core.management import call_command

from devtools.psc_mock import cli, tokens
from tests.factories import psc_sample

pytestmark = pytest.mark.django_db(transaction=True)

DOCTOR = "899700120019"
INTROSPECT = f"{cli.OIDC}/token/introspect"


def _introspect(base: str, token: str) -> dict:
    answer = requests.post(
        f"{base}{INTROSPECT}",
        data={"token": token},
        auth=(settings.PSC_CLIENT_ID, settings.PSC_CLIENT_SECRET),
        timeout=10,
    )
    assert answer.status_code == 200
    return dict(answer.json())


def test_software_gets_a_token_whose_introspection_has_the_real_fields(live_server) -> None:
    answer = cli.token_for(live_server.url, DOCTOR)

    assert answer["refresh_token"] and answer["expires_in"] == tokens.TOKEN_TTL
    claims = _introspect(live_server.url, answer["access_token"])
    real = psc_sample("PSC200_activetrue_medecin_899700218896.json")
    assert set(real) <= set(claims)
    assert claims["active"] is True
    assert claims["preferred_username"] == DOCTOR and claims["SubjectNameID"] == DOCTOR
    assert claims["client_id"] == settings.PSC_MOCK_LPS_CLIENT_ID
    assert claims["acr"] == "eidas1"
    assert claims["iss"] == f"{live_server.url}/_dev/psc/auth/realms/esante-wallet"


def test_refresh_gives_a_new_token_and_revoke_ends_the_session(live_server) -> None:
    first = cli.token_for(live_server.url, DOCTOR)
    second = cli.token_refresh(live_server.url, first["refresh_token"])
    assert second["access_token"] != first["access_token"]
    assert _introspect(live_server.url, second["access_token"])["active"] is True

    cli.token_revoke(live_server.url, first["refresh_token"])

    assert _introspect(live_server.url, first["access_token"]) == {"active": False}
    assert _introspect(live_server.url, second["access_token"]) == {"active": False}
    with pytest.raises(RuntimeError):
        cli.token_refresh(live_server.url, first["refresh_token"])


def test_expired_and_forged_tokens_are_inactive(live_server) -> None:
    expired = tokens.access_issue(
        sub=DOCTOR, mode="CARD", client_id=settings.PSC_MOCK_LPS_CLIENT_ID, auth_time=0,
        lifetime=-1,
    )  # fmt: skip
    assert _introspect(live_server.url, expired) == {"active": False}
    assert _introspect(live_server.url, "n'importe quoi") == {"active": False}


def test_introspection_needs_a_registered_client(live_server) -> None:
    token = cli.token_for(live_server.url, DOCTOR)["access_token"]
    answer = requests.post(
        f"{live_server.url}{INTROSPECT}", data={"token": token}, auth=("x", "y"), timeout=10
    )
    assert answer.status_code == 401


def test_software_may_not_redirect_outside_loopback(live_server) -> None:
    page = requests.get(
        f"{live_server.url}{cli.AUTHORIZE}",
        params={
            "response_type": "code",
            "client_id": settings.PSC_MOCK_LPS_CLIENT_ID,
            "redirect_uri": "https://ailleurs.example/callback",
            "scope": "openid",
        },
        timeout=10,
    )
    assert page.status_code == 400
    assert "Adresse de retour non enregistrée" in page.text


def test_psc_token_command_prints_a_token(live_server, capsys) -> None:
    call_command("psc_token", DOCTOR, "--url", live_server.url)
    token = capsys.readouterr().out.strip()
    assert _introspect(live_server.url, token)["username"] == DOCTOR
