"""A BAL's size is asked of Dovecot, so it is right in every process: in production only
Dovecot and the store worker mount the Maildirs, and behind the proxy the mail is on a backend.
The quota at RCPT and the consoles' sizes depend on it."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache

from mailboxes.store.imap import open_store
from mailboxes.store.sizes import home_sizes
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import deliver, mx_client

pytestmark = pytest.mark.django_db(transaction=True)
SENDER = "labo@operateur-test.mssante.fr"


def test_a_process_that_does_not_mount_the_mail_sees_each_bal_s_size(
    dovecot: Any, settings: Any, tmp_path: Any
) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    deliver(box.address, b"Subject: bilan\r\n\r\n" + b"x" * 20_000 + b"\r\n")
    settings.DOVECOT_MAIL_ROOT = str(tmp_path / "pas-monte-ici")  # as web, worker, gateway

    first = home_sizes([box.address])[box.address]
    assert first is not None and 20_000 < first < 21_000

    with open_store(box.address) as store:  # a copy in another folder counts too
        store.append("Sent", b"Subject: copie\r\n\r\n" + b"y" * 5_000 + b"\r\n")
    assert home_sizes([box.address])[box.address] == first  # cached a few minutes
    cache.delete(f"bal-size:{box.address}")
    assert home_sizes([box.address])[box.address] == first + len(
        b"Subject: copie\r\n\r\n" + b"y" * 5_000 + b"\r\n"
    )


def test_a_bal_dovecot_does_not_know_has_no_size_and_it_is_asked_again(dovecot: Any) -> None:
    unknown = "personne@inconnue.mssante.fr"
    assert home_sizes([unknown]) == {unknown: None}
    assert cache.get(f"bal-size:{unknown}") is None


def test_the_gateway_refuses_a_full_bal_though_it_does_not_mount_the_mail(
    mx: int, pki: Any, dovecot: Any, settings: Any, tmp_path: Any
) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    deliver(box.address, b"Subject: ancien\r\n\r\n" + b"x" * 5000 + b"\r\n")
    settings.DOVECOT_MAIL_ROOT = str(tmp_path / "pas-monte-ici")
    used = home_sizes([box.address])[box.address]
    assert used
    box.quota_bytes = used
    box.save(update_fields=["quota_bytes"])

    with mx_client(mx, pki) as smtp:
        smtp.mail(SENDER)
        refused = smtp.rcpt(box.address)
        smtp.rset()

    assert refused[0] == 452
