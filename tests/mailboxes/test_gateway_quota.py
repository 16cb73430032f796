"""The MX refuses RCPT for a BAL at or over its quota with 452 4.2.2 (temporary: the sending
operator keeps the message), traces the refusal, and the operator's console counts it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import AuditEvent
from mailboxes.models import Mailbox
from mailboxes.store.sizes import home_sizes
from tests.factories import make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import deliver, inbox, mx_client

pytestmark = pytest.mark.django_db(transaction=True)
SENDER = "labo@operateur-test.mssante.fr"


def test_a_bal_at_its_quota_is_refused_with_452_4_2_2_and_the_refusal_is_shown(
    mx: int, pki: Any, dovecot: Any
) -> None:
    structure = make_structure()
    full = make_mailbox(structure=structure, owner=make_professional())
    roomy = make_mailbox(
        structure=structure, local_part="paul.durand",
        owner=make_professional(first_name="Paul", last_name="Durand"),
    )  # fmt: skip
    deliver(full.address, b"Subject: ancien\r\n\r\n" + b"x" * 5000 + b"\r\n")
    used = home_sizes([full.address])[full.address]
    assert used
    Mailbox.objects.filter(pk=full.pk).update(quota_bytes=used)  # at the quota: full
    Mailbox.objects.filter(pk=roomy.pk).update(quota_bytes=used * 100)

    with mx_client(mx, pki) as smtp:
        smtp.mail(SENDER)
        refused = smtp.rcpt(full.address)
        accepted = smtp.rcpt(roomy.address)
        smtp.data(make_message(to=roomy.address))

    assert refused[0] == 452
    assert refused[1].decode().startswith("4.2.2 Mailbox full")
    assert accepted[0] == 250
    assert len(inbox(full.address)) == 1  # only the message it held before
    assert len(inbox(roomy.address)) == 1
    trace = AuditEvent.objects.get(action="gateway.refused")
    assert trace.details["to"] == full.address and trace.error_code == "452"
    assert "CN=smtp.operateur-test.fr" in trace.actor_label  # the peer's certificate

    staff = make_professional(first_name="Odile", last_name="Opératrice")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(staff)
    session = client.session
    session[AUTH_AT_SESSION_KEY] = int(time.time())
    session.save()
    page = client.get("/operateur/reception/").content.decode()
    assert "BAL pleine (quota)" in page
    assert "452 4.2.2 Mailbox full" in page
    assert "accepté" in page  # the message to the other BAL
