"""Daily indicators are rebuilt from the traces (counts only), and rebuilding is idempotent."""

from __future__ import annotations

from django.utils import timezone

from accounts.audit import audit_record
from mailboxes.console.services.indicators import indicators_compute
from mailboxes.models import DailyIndicator


def _received(sender: str, to: list[str], ok: bool = True) -> None:
    audit_record(
        action="gateway.received",
        actor_label="CN=smtp.operateur-test.fr",
        success=ok,
        error_code="" if ok else "550",
        details={"from": sender, "to": to},
    )


def test_counts_per_day_and_peer_domain_are_rebuilt_from_the_traces(db) -> None:
    _received("labo@operateur-test.mssante.fr", ["a@ehpad.mssante.fr", "b@ehpad.mssante.fr"])
    _received("labo@operateur-test.mssante.fr", ["a@ehpad.mssante.fr"])
    _received("x@inconnu.mssante.fr", ["a@ehpad.mssante.fr"], ok=False)
    audit_record(
        action="relay.relayed",
        actor_label="relais",
        details={"domain": "chu.mssante.fr", "recipients": 3},  # one trace per domain
    )
    audit_record(
        action="relay.failed", actor_label="relais", success=False, details={"domain": "gmail.com"}
    )
    audit_record(action="message.read", actor_label="899700100001")  # not an indicator

    today = timezone.localdate()
    indicators_compute(day=today)
    indicators_compute(day=today)  # idempotent: rebuilt, not added twice

    counts = {(i.name, i.key): i.count for i in DailyIndicator.objects.filter(day=today)}
    assert counts == {
        ("inbound.delivered", "operateur-test.mssante.fr"): 2,
        ("inbound.recipients", "operateur-test.mssante.fr"): 3,
        ("inbound.refused", "inconnu.mssante.fr"): 1,
        ("outbound.relayed", "chu.mssante.fr"): 3,
        ("outbound.failed", "gmail.com"): 1,
    }
