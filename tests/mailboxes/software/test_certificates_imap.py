"""APP BALs by certificate over IMAP (issue 18): the director binds a software's TLS client
certificate to an APP BAL, and the software logs in with SASL EXTERNAL, no token, no
password. A certificate opens its own BAL and nothing else; unbinding ends the session."""

from __future__ import annotations

import imaplib
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import TestCase

from accounts.audit import Action
from accounts.models import AuditEvent
from mailboxes.console.services.certificates import certificate_bind, certificate_unbind
from mailboxes.models import AppCertificate
from mailboxes.software import imap_traces
from tests.factories import make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.software.conftest import CLIENT_ADDRESS, LpsImap, LpsImapTls, client_tls

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def apps(lps: dict[str, Any], pki: Any) -> dict[str, Any]:
    """Two APP BALs of one structure: the DUI's (its certificate bound) and the lab's."""
    director = make_professional(first_name="Hélène", last_name="Directrice")
    structure = make_structure()
    dui = make_mailbox(structure=structure, kind="APP", local_part="dui", responsible=director)
    lab = make_mailbox(structure=structure, kind="APP", local_part="labo", responsible=director)
    wait_provisioned(dui.address, lab.address)
    deliver(dui.address, make_message(subject="Résultat pour le DUI", to=dui.address))
    deliver(lab.address, make_message(subject="Résultat du labo", to=lab.address))
    certificate_bind(mailbox=dui, data=Path(pki["software"].cert).read_bytes(), actor=director)
    return {"dui": dui, "lab": lab, "director": director}


def _external(imap: imaplib.IMAP4, authzid: str = "") -> None:
    imap.authenticate("EXTERNAL", lambda _: authzid.encode())


def _subjects(imap: imaplib.IMAP4) -> bytes:
    imap.select("INBOX", readonly=True)
    _typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    return b"".join(p[1] if isinstance(p, tuple) else p for p in data if p is not None)


@pytest.mark.parametrize("authzid", ["", "bal"], ids=["own-bal", "bal-named"])
def test_the_bound_certificate_opens_its_app_bal_after_starttls(apps, lps, pki, authzid) -> None:
    imap = LpsImap("127.0.0.1", lps["imap"])
    imap.starttls(ssl_context=client_tls(pki, "software"))
    _external(imap, apps["dui"].address if authzid else "")
    subjects = _subjects(imap)
    imap.logout()

    assert b"DUI" in subjects
    assert b"labo" not in subjects
    login = AuditEvent.objects.get(action=Action.SOFTWARE_LOGIN)
    assert login.actor is None and "dui.ehpad-test.fr" in login.actor_label
    assert login.target_id == str(apps["dui"].public_id)
    assert login.details["mechanism"] == "EXTERNAL" and login.ip_address == CLIENT_ADDRESS


def test_over_imaps_too(apps, lps, pki) -> None:
    imap = LpsImapTls("127.0.0.1", lps["imaps"], ssl_context=client_tls(pki, "software"))
    _external(imap)
    typ, data = imap.select("INBOX", readonly=True)
    imap.logout()
    assert typ == "OK" and data == [b"1"]


def test_a_certificate_opens_no_other_bal(apps, lps, pki) -> None:
    imap = LpsImap("127.0.0.1", lps["imap"])
    imap.starttls(ssl_context=client_tls(pki, "software"))
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED|Authentication failed"):
        _external(imap, apps["lab"].address)
    imap.logout()
    failed = AuditEvent.objects.get(action=Action.SOFTWARE_LOGIN_FAILED)
    assert failed.error_code == "other_mailbox"
    assert not AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).exists()


@pytest.mark.parametrize("certificate", ["software-other", "software-foreign", ""])
def test_an_unbound_a_foreign_or_no_certificate_opens_nothing(apps, lps, pki, certificate) -> None:
    """Another software's certificate (valid, not bound), the DUI's name from another CA, no
    certificate at all: EXTERNAL fails, whatever BAL is named."""
    imap = LpsImap("127.0.0.1", lps["imap"])
    imap.starttls(ssl_context=client_tls(pki, certificate))
    for authzid in ("", apps["dui"].address):
        with pytest.raises(imaplib.IMAP4.error):
            _external(imap, authzid)
    imap.logout()
    assert not AuditEvent.objects.filter(action=Action.SOFTWARE_LOGIN).exists()


def test_no_external_before_tls(apps, lps) -> None:
    imap = LpsImap("127.0.0.1", lps["imap"])
    assert "AUTH=EXTERNAL" not in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        _external(imap)
    imap.logout()


def test_unbinding_ends_the_open_session_and_the_next_login(apps, lps, pki) -> None:
    imap = LpsImap("127.0.0.1", lps["imap"])
    imap.starttls(ssl_context=client_tls(pki, "software"))
    _external(imap)
    imap.select("INBOX", readonly=True)
    bound = AppCertificate.objects.get(mailbox=apps["dui"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        certificate_unbind(certificate=bound, actor=apps["director"])

    with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # doveadm kick reaches the process at once
            imap.noop()
            time.sleep(0.1)
    again = LpsImap("127.0.0.1", lps["imap"])
    again.starttls(ssl_context=client_tls(pki, "software"))
    with pytest.raises(imaplib.IMAP4.error):
        _external(again)
    again.logout()
    unbound = AuditEvent.objects.get(action=Action.SOFTWARE_CERTIFICATE_UNBOUND)
    assert unbound.actor == apps["director"]


def test_what_the_software_does_is_traced_under_its_certificate(apps, lps, pki) -> None:
    imap = LpsImap("127.0.0.1", lps["imap"])
    imap.starttls(ssl_context=client_tls(pki, "software"))
    _external(imap)
    imap.select("INBOX")
    imap.store("1", "+FLAGS", "(\\Deleted)")
    imap.expunge()
    imap.logout()
    time.sleep(0.3)  # the log line is written as the session's command ends

    imap_traces.collect(lps["log"])
    deleted = AuditEvent.objects.get(action=Action.MESSAGE_DELETE)
    assert deleted.actor is None and "dui.ehpad-test.fr" in deleted.actor_label
    assert deleted.target_id == str(apps["dui"].public_id)


def test_curl_logs_in_with_its_certificate(apps, lps, pki) -> None:
    """A client we did not write: curl, SASL EXTERNAL with --cert."""
    done = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--ssl-reqd", "--max-time", "20",
            "--interface", CLIENT_ADDRESS, "--cacert", str(pki["ca"].cert),
            "--cert", str(pki["software"].cert), "--key", str(pki["software"].key),
            "--login-options", "AUTH=EXTERNAL", "--user", f"{apps['dui'].address}:",
            f"imap://127.0.0.1:{lps['imap']}/INBOX", "-X", "EXAMINE INBOX",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 EXISTS" in done.stdout
