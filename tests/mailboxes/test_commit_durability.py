"""What a 250 promises waits for the WAL flush; the journal rows of the gateway's hot path do
not (mssante_portal.sql): the gateway's trace and marker turn their connection to asynchronous
commit, and the spool, on that same connection, turns it back for its own transaction."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from accounts.models import AuditEvent
from mailboxes.models import OutboundMessage
from mailboxes.transport.gateway import policy
from mailboxes.transport.relay import Recipient, message_spool
from mssante_portal.sql import unsynced_query

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's WAL"),
]


def _commit_setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


def _trace(message_id: str) -> None:
    peer = policy.Peer(subject=None, tls_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
    policy.trace(peer=peer, mail_from="a@operateur-test.mssante.fr", recipients=["b@x.fr"],
                 message_id=message_id, size=10, reply="250 2.0.0 Message delivered")  # fmt: skip


def _spool() -> None:
    message_spool(
        origin=OutboundMessage.Origin.GATEWAY,
        envelope_from="a@x.fr",
        recipients=[Recipient("b@autre.mssante.fr")],
        content=b"Subject: x\r\n\r\nx",
    )


def test_the_gateway_trace_does_not_wait_for_the_flush_but_the_spool_does() -> None:
    assert _commit_setting() == "on"
    _trace("<t1@x>")
    assert AuditEvent.objects.filter(target_id="<t1@x>").exists()
    assert _commit_setting() == "off"  # the session of the hot path

    with transaction.atomic():
        _spool()
        assert _commit_setting() == "on"  # this transaction waits for the flush
    assert _commit_setting() == "off"
    assert OutboundMessage.objects.count() == 1

    _trace("<t2@x>")  # the statement prepared at the first trace, again
    assert AuditEvent.objects.filter(target_id__in=["<t1@x>", "<t2@x>"]).count() == 2


def test_a_spool_on_a_connection_left_synchronous_changes_nothing() -> None:
    _spool()
    assert _commit_setting() == "on"


def test_a_failing_statement_comes_out_as_a_django_error_and_the_next_one_works() -> None:
    from django.db import DatabaseError

    with pytest.raises(DatabaseError):
        unsynced_query("SELECT 1 / %s", [0])
    assert unsynced_query("SELECT %s::int + 1", [1]) == [(2,)]
