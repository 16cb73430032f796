"""A token PSC found live is remembered for a short while (LPS_TOKEN_CACHE_SECONDS), under a
hash of the token, never past its expiry: a software reopening sessions with the token it keeps
costs no introspection each time, and every other check of a login still runs. PSC is the mock
over real HTTP (the live server)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from accounts.audit import Action
from accounts.models import AuditEvent
from devtools.psc_mock import cli, tokens
from mailboxes.console.services.people import access_revoke
from mailboxes.models import SoftwareLogin
from mailboxes.software import psc
from mailboxes.software.sessions import LoginRefused, software_login
from tests.factories import grant, make_mailbox, make_professional, make_structure
from tests.mailboxes.software.conftest import DISCOVERY_PATH, token

pytestmark = pytest.mark.django_db(transaction=True)

DOCTOR = "899700120019"
SECRETARY = "899700120035"


@pytest.fixture
def psc_live(live_server: Any, settings: Any) -> str:
    settings.PSC_DISCOVERY_URL = f"{live_server.url}{DISCOVERY_PATH}"
    settings.LPS_TOKEN_CACHE_SECONDS = 30
    return str(live_server.url)


@pytest.fixture
def box() -> Any:
    doctor = make_professional(national_id=DOCTOR)
    return make_mailbox(structure=make_structure(), owner=doctor)


def _login(box: Any, presented: str) -> Any:
    return software_login(address=box.address, token=presented, service="imap", remote="127.0.0.2")


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    start = psc.now()
    monkeypatch.setattr(psc, "now", lambda: start + seconds)


def test_a_kept_token_opens_sessions_without_asking_psc_each_time_and_each_login_is_traced(
    psc_live, box
) -> None:
    presented = token(DOCTOR)
    _login(box, presented)
    # Revoked at PSC: only an answer remembered here can still open the BAL now.
    cli.token_revoke(psc_live, presented)
    _login(box, presented)

    assert AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).count() == 2
    assert SoftwareLogin.objects.filter(mailbox=box).count() == 2


def test_a_revoked_token_stops_opening_sessions_once_its_verdict_lapses(
    psc_live, box, monkeypatch
) -> None:
    presented = token(DOCTOR)
    _login(box, presented)
    cli.token_revoke(psc_live, presented)
    _later(monkeypatch, django_settings.LPS_TOKEN_CACHE_SECONDS + 1)

    with pytest.raises(LoginRefused) as refused:
        _login(box, presented)
    assert refused.value.reason == "inactive"


def test_without_the_cache_a_revoked_token_is_refused_at_once(psc_live, box, settings) -> None:
    settings.LPS_TOKEN_CACHE_SECONDS = 0
    presented = token(DOCTOR)
    _login(box, presented)
    cli.token_revoke(psc_live, presented)

    with pytest.raises(LoginRefused) as refused:
        _login(box, presented)
    assert refused.value.reason == "inactive"


def test_a_remembered_verdict_never_outlives_the_token(psc_live, box, monkeypatch) -> None:
    presented = token(DOCTOR, lifetime=10)  # expires well before the 30 s of the cache
    _login(box, presented)
    _later(monkeypatch, 11)

    with pytest.raises(LoginRefused) as refused:
        _login(box, presented)
    assert refused.value.reason in {"expired", "inactive"}


def test_rights_are_checked_at_every_login_even_with_a_remembered_token(psc_live, box) -> None:
    secretary = make_professional(national_id=SECRETARY, first_name="Sophie")
    access = grant(box, secretary)
    presented = token(SECRETARY)
    _login(box, presented)
    access_revoke(access=access, actor=box.owner)

    with pytest.raises(LoginRefused) as refused:
        _login(box, presented)
    assert refused.value.reason == "no_right"


def test_a_token_psc_answers_for_but_we_refuse_is_not_remembered(psc_live, box) -> None:
    weak = tokens.access_issue(
        sub=DOCTOR, mode="CARD", client_id=django_settings.PSC_MOCK_LPS_CLIENT_ID,
        auth_time=int(time.time()), acr="eidas0",
    )  # fmt: skip
    for _ in range(2):
        with pytest.raises(LoginRefused) as refused:
            _login(box, weak)
        assert refused.value.reason == "acr"
    assert psc._remembered(weak) is None


def test_the_cache_holds_a_hash_of_the_token_never_the_token(psc_live, box) -> None:
    presented = token(DOCTOR)
    _login(box, presented)

    location = django_settings.CACHES["default"]["LOCATION"]
    store = redis.Redis.from_url(location)
    keys = [k for k in store.scan_iter(match="*lps:token:*")]
    assert keys, "the verdict is in the cache"
    secret = presented.encode()
    for key in keys:
        assert secret not in key and secret not in (store.get(key) or b"")
        assert secret[:40] not in (store.get(key) or b"")


def test_a_kept_tokens_login_reads_once_and_writes_its_trace_and_session_at_once(
    psc_live, box, django_assert_num_queries
) -> None:
    """Every check still runs (the person, the BAL, the right: one query) and every login is
    written (the trace, the session row, the earlier session from that address ended: one
    statement, one commit)."""
    presented = token(DOCTOR)
    _login(box, presented)
    software_login(address=box.address, token=presented, service="imap", remote=None)
    with django_assert_num_queries(2):
        _login(box, presented)

    earlier, elsewhere, latest = SoftwareLogin.objects.filter(mailbox=box).order_by("pk")
    assert earlier.ended_at is not None and elsewhere.ended_at is None
    assert latest.ended_at is None and latest.remote == "127.0.0.2" and latest.user == box.owner
    trace = AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).latest("pk")
    assert (trace.actor, trace.actor_label, trace.target_id, trace.structure_id) == (
        box.owner,
        DOCTOR,
        str(box.public_id),
        box.structure_id,
    )
    assert trace.ip_address == "127.0.0.2" and trace.details == {
        "service": "imap", "software": django_settings.PSC_MOCK_LPS_CLIENT_ID, "relation": "owner"
    }  # fmt: skip
