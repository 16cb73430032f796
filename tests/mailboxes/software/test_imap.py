"""API LPS over IMAP (mssante-spec §2.2): a mail client or a care software opens a BAL with a
Pro Santé Connect token (SASL XOAUTH2 / OAUTHBEARER) after TLS, with the webmail's rights.
Clients we did not write: Python's imaplib and curl."""

from __future__ import annotations

import imaplib
import subprocess
import time
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.audit import Action
from accounts.models import AuditEvent
from devtools.psc_mock import cli
from mailboxes.software.views import DOVECOT_AUTH_PATH
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, inbox, wait_provisioned
from tests.mailboxes.software.conftest import (
    CLIENT_ADDRESS,
    LpsImap,
    LpsImapTls,
    client_tls,
    oauthbearer,
    token,
    xoauth2,
)

pytestmark = pytest.mark.django_db(transaction=True)

DOCTOR = "899700120019"  # Dr Claire Martin in the mock's identities
SECRETARY = "899700120035"


@pytest.fixture
def cast(lps: dict[str, Any]) -> dict[str, Any]:
    doctor = make_professional(national_id=DOCTOR)
    secretary = make_professional(national_id=SECRETARY, first_name="Sophie", last_name="Bernard")
    outsider = make_professional(first_name="Paul", last_name="Autre")
    box = make_mailbox(structure=make_structure(), owner=doctor)
    grant(box, secretary)  # reading only
    wait_provisioned(box.address)
    deliver(box.address, make_message(subject="Compte rendu"))
    return {"box": box, "doctor": doctor, "secretary": secretary, "outsider": outsider}


def _joined(data: list[Any]) -> bytes:
    """The bytes of an imaplib FETCH answer, literals included."""
    return b"".join(p[1] if isinstance(p, tuple) else p for p in data if p is not None)


def _starttls(lps: dict[str, Any], pki: Any) -> LpsImap:
    imap = LpsImap("127.0.0.1", lps["imap"])
    imap.starttls(ssl_context=client_tls(pki))
    return imap


def test_holder_reads_the_inbox_with_xoauth2_after_starttls(cast, lps, pki) -> None:
    box = cast["box"]
    imap = _starttls(lps, pki)
    imap.authenticate("XOAUTH2", lambda _: xoauth2(box.address, token(DOCTOR)))
    imap.select("INBOX")
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    imap.logout()

    assert typ == "OK" and b"Compte rendu" in _joined(data)
    login = AuditEvent.objects.get(action=Action.SOFTWARE_LOGIN)
    assert login.actor == cast["doctor"] and login.target_id == str(box.public_id)
    assert login.details["software"] == "logiciel-metier-test"
    assert login.ip_address == CLIENT_ADDRESS


def test_oauthbearer_over_imaps_with_a_token_from_the_real_flow(
    cast, lps, pki, live_server
) -> None:
    access = cli.token_for(live_server.url, DOCTOR)["access_token"]
    imap = LpsImapTls("127.0.0.1", lps["imaps"], ssl_context=client_tls(pki))
    imap.authenticate("OAUTHBEARER", lambda _: oauthbearer(cast["box"].address, access))
    typ, data = imap.select("INBOX", readonly=True)
    imap.logout()
    assert typ == "OK" and data == [b"1"]


@pytest.mark.parametrize("case", ["wrong_person", "expired", "revoked", "forged"])
def test_a_token_that_does_not_open_this_bal_is_refused(case, cast, lps, pki, live_server) -> None:
    if case == "wrong_person":
        presented = token(cast["outsider"].national_id)
    elif case == "expired":
        presented = token(DOCTOR, lifetime=-1)
    elif case == "revoked":
        presented = token(DOCTOR)
        cli.token_revoke(live_server.url, presented)
    else:
        presented = token(DOCTOR) + "x"
    imap = _starttls(lps, pki)
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|Authentication failed"):
        imap.authenticate("XOAUTH2", lambda _: xoauth2(cast["box"].address, presented))
    imap.logout()
    failed = AuditEvent.objects.get(action=Action.SOFTWARE_LOGIN_FAILED)
    assert (
        failed.error_code
        == {
            "wrong_person": "no_right",
            "expired": "inactive",
            "revoked": "inactive",
            "forged": "inactive",
        }[case]
    )
    assert not AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).exists()


def test_no_authentication_before_tls(cast, lps) -> None:
    imap = LpsImap("127.0.0.1", lps["imap"])
    assert "LOGINDISABLED" in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        imap.authenticate("XOAUTH2", lambda _: xoauth2(cast["box"].address, token(DOCTOR)))
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(cast["box"].address, token(DOCTOR))
    imap.logout()
    assert not AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).exists()


def test_a_password_is_no_way_in(cast, lps, pki) -> None:
    """PLAIN with the token as a password is not an OAuth2 login (SC.MSS/CONF.07)."""
    imap = _starttls(lps, pki)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(cast["box"].address, token(DOCTOR))
    imap.logout()


def test_read_only_delegate_reads_but_cannot_delete(cast, lps, pki) -> None:
    imap = _starttls(lps, pki)
    imap.authenticate("XOAUTH2", lambda _: xoauth2(cast["box"].address, token(SECRETARY)))
    with pytest.raises(imaplib.IMAP4.readonly):  # Dovecot answers [READ-ONLY] to SELECT
        imap.select("INBOX")
    imap.is_readonly = True
    typ, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"Compte rendu" in _joined(data)
    for attempt in (lambda: imap.store("1", "+FLAGS", "(\\Deleted)"), imap.expunge):
        imap.is_readonly = False  # imaplib refuses on its own: ask the server anyway
        try:
            typ, _ = attempt()
        except imaplib.IMAP4.readonly:
            typ = "READ-ONLY"  # Dovecot answered [READ-ONLY]
        assert typ != "OK"
    imap.is_readonly = True
    typ, data = imap.fetch("1", "(FLAGS)")
    assert typ == "OK" and b"\\Deleted" not in _joined(data)
    imap.logout()
    assert len(inbox(cast["box"].address)) == 1


def test_holder_may_delete(cast, lps, pki) -> None:
    imap = _starttls(lps, pki)
    imap.authenticate("XOAUTH2", lambda _: xoauth2(cast["box"].address, token(DOCTOR)))
    imap.select("INBOX")
    typ, _ = imap.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "OK"
    imap.expunge()
    imap.logout()
    assert inbox(cast["box"].address) == []


def test_curl_lists_and_fetches_with_its_oauth2_bearer(cast, lps, pki) -> None:
    box = cast["box"]
    base = [
        "curl", "--silent", "--show-error", "--ssl-reqd", "--cacert", str(pki["ca"].cert),
        "--interface", CLIENT_ADDRESS, "--user", f"{box.address}:",
        "--oauth2-bearer", token(DOCTOR), "--max-time", "20",
    ]  # fmt: skip
    listing = subprocess.run(
        [*base, f"imap://127.0.0.1:{lps['imap']}/"], capture_output=True, text=True, check=False
    )
    assert listing.returncode == 0, listing.stderr
    assert "INBOX" in listing.stdout and "Sent" in listing.stdout
    message = subprocess.run(
        [*base, "--login-options", "AUTH=XOAUTH2", f"imap://127.0.0.1:{lps['imap']}/INBOX;UID=1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert message.returncode == 0, message.stderr
    assert "Subject: Compte rendu" in message.stdout


def test_the_login_endpoint_answers_dovecot_only(client, settings) -> None:
    body = b"claire.martin@ehpad-les-tilleuls.mssante.fr\0jeton\0"
    url = "/logiciels/dovecot/auth"
    wrong = client.post(url, body, content_type="application/octet-stream", HTTP_X_LPS_SECRET="x")
    remote = client.post(
        url,
        body,
        content_type="application/octet-stream",
        HTTP_X_LPS_SECRET=settings.LPS_AUTH_SECRET,
        REMOTE_ADDR="192.0.2.10",
    )
    assert wrong.status_code == 404 and remote.status_code == 404
    assert not AuditEvent.objects.exists()


def test_dovecots_requests_skip_the_page_middleware_and_no_other_does(client, settings) -> None:
    """Dovecot's request (loopback, the secret) is answered before the middleware made for
    pages (no CSP, no language); any other request to that URL still meets the whole stack,
    the host check first (400 for a host we do not serve)."""
    assert reverse("software:dovecot_auth") == DOVECOT_AUTH_PATH
    malformed = b"claire.martin@ehpad-les-tilleuls.mssante.fr"  # no token: refused at once
    kinds = {"content_type": "application/octet-stream", "HTTP_HOST": "ailleurs.example"}
    dovecot = client.post(
        DOVECOT_AUTH_PATH, malformed, HTTP_X_LPS_SECRET=settings.LPS_AUTH_SECRET, **kinds
    )
    other = client.post(DOVECOT_AUTH_PATH, malformed, HTTP_X_LPS_SECRET="x", **kinds)
    assert dovecot.status_code == 403
    assert "Content-Security-Policy" not in dovecot and "Content-Language" not in dovecot
    assert other.status_code == 400


def test_what_a_software_does_over_imap_reaches_the_journal(cast, lps, pki) -> None:
    from mailboxes.software.imap_traces import collect

    collect(lps["log"])  # earlier tests' lines
    before = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    imap = _starttls(lps, pki)
    imap.authenticate("XOAUTH2", lambda _: xoauth2(cast["box"].address, token(DOCTOR)))
    imap.select("INBOX")
    imap.fetch("1", "(BODY[])")
    typ, _ = imap._simple_command("MOVE", "1", "Trash")  # RFC 6851
    assert typ == "OK"
    imap.logout()

    # BODY[] sets \\Seen (a flag change); MOVE is a copy then an expunge of the original.
    wanted = {Action.MESSAGE_READ, Action.MESSAGE_FLAG, Action.MESSAGE_MOVE, Action.MESSAGE_DELETE}
    deadline = time.monotonic() + 10  # Dovecot's log process writes the lines a bit later
    while True:
        collect(lps["log"])
        new = AuditEvent.objects.filter(pk__gt=before).exclude(action=Action.SOFTWARE_LOGIN)
        if wanted <= set(new.values_list("action", flat=True)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_action = {e.action: e for e in new}
    assert set(by_action) == wanted
    assert all(e.actor == cast["doctor"] for e in new)
    assert all(e.target_id == str(cast["box"].public_id) for e in new)
    assert by_action[Action.MESSAGE_READ].details["count"] == "1"
    assert by_action[Action.MESSAGE_MOVE].details["box"] == "Trash"
    collect(lps["log"])
    assert AuditEvent.objects.filter(pk__gt=before).count() == new.count() + 1  # once each


def test_the_session_ends_when_its_token_expires(cast, lps, pki) -> None:
    """SC.MSS/CONF.10. The expiry is reached by moving the recorded end into the past (the
    token's lifetime is PSC's, 120 s): the portal then disconnects the session."""
    from mailboxes.models import SoftwareLogin
    from mailboxes.software.expiry import sessions_end_expired

    imap = _starttls(lps, pki)
    imap.authenticate("XOAUTH2", lambda _: xoauth2(cast["box"].address, token(DOCTOR)))
    imap.select("INBOX")
    assert sessions_end_expired() == 0  # the token is still valid: nothing happens
    assert imap.noop()[0] == "OK"

    SoftwareLogin.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert sessions_end_expired() == 1

    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        imap.noop()
        imap.noop()  # a kicked session answers BYE, then the connection is closed
    ended = AuditEvent.objects.get(action=Action.SOFTWARE_SESSION_ENDED)
    assert ended.actor == cast["doctor"] and ended.ip_address == CLIENT_ADDRESS
