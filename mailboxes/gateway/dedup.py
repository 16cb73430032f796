"""A message the gateway already delivered is not delivered again.

An operator that lost our 250 (its worker killed after we answered, a connection cut after
the reply) sends the same message again. Our success trace of the first transaction is
committed before the 250 leaves, so it tells, by Message-ID, which recipients already have
it: those are answered 250 again without a second copy. Dovecot's Sieve duplicate test
(RFC 7352, deploy/dovecot) is the second line, for a reply lost before our trace committed.

Measured with bench/faults.py (10,000 messages, random SIGKILLs): without this check, 77 to
116 messages were delivered twice (Dovecot's duplicate database does not survive its own
kill); the lookup is one indexed query (audit_target) per message.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from accounts.models import AuditEvent

WINDOW = timedelta(days=7)  # an SMTP sender retries for at most 5 days (RFC 5321 §4.5.4.1)


def delivered_before(message_id: str, recipients: list[str]) -> set[str]:
    """The recipients among ``recipients`` a successful earlier transaction of this
    Message-ID delivered to (empty without a Message-ID: nothing to recognise it by)."""
    if not message_id:
        return set()
    wanted = {r.lower() for r in recipients}
    found: set[str] = set()
    earlier = AuditEvent.objects.filter(
        target_type="message",
        target_id=message_id[:128],
        action="gateway.received",
        result=AuditEvent.Result.SUCCESS,
        occurred_at__gte=timezone.now() - WINDOW,
    ).values_list("details", flat=True)
    for details in earlier:
        if isinstance(details, dict):
            found.update(
                str(a).lower() for a in details.get("to") or [] if str(a).lower() in wanted
            )
    return found
