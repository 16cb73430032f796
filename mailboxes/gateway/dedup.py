"""A message the gateway already delivered is not delivered again.

An operator that lost our 250 (its worker killed after we answered, a connection cut after
the reply) sends the same message again. Our success trace of the first transaction is
committed before the 250 leaves, so it tells, by Message-ID, which recipients already have
it: those are answered 250 again without a second copy. Dovecot's Sieve duplicate test
(RFC 7352, deploy/dovecot) is the second line, for a reply lost before our trace committed.

When Dovecot died after storing a message but before answering, we said 451 (we could not
know); the retry then finds the message in the BAL's INBOX by Message-ID (an IMAP search paid
only by messages with such a failure).

Measured with bench/faults.py (10,000 messages, random SIGKILLs): without these checks, 17 to
77 messages were delivered twice (Dovecot's duplicate database does not survive its own
kill); the common case costs one indexed query (audit_target) per message.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from accounts.models import AuditEvent
from mailboxes.errors import StoreUnavailable
from mailboxes.store.imap import MailStore

WINDOW = timedelta(days=7)  # an SMTP sender retries for at most 5 days (RFC 5321 §4.5.4.1)


def delivered_before(message_id: str, recipients: list[str]) -> set[str]:
    """The recipients among ``recipients`` an earlier transaction of this Message-ID delivered
    to: those a successful one named, and, after a 451 for a store connection broken
    mid-delivery, those whose INBOX already holds the message. One indexed query (audit_target)
    per message; empty without a Message-ID (nothing to recognise it by)."""
    if not message_id:
        return set()
    wanted = {r.lower() for r in recipients}
    found: set[str] = set()
    uncertain = False
    earlier = AuditEvent.objects.filter(
        target_type="message",
        target_id=message_id[:128],
        action="gateway.received",
        occurred_at__gte=timezone.now() - WINDOW,
    ).values_list("result", "details")
    for result, details in earlier:
        if not isinstance(details, dict):
            continue
        if result == AuditEvent.Result.SUCCESS:
            found.update(
                a for a in (str(x).lower() for x in details.get("to") or []) if a in wanted
            )
        elif str(details.get("reply", "")).startswith(UNCERTAIN):
            uncertain = True
    if uncertain:
        found |= _in_inbox(message_id, wanted - found)
    return found


# Our 451 when the store connection broke after the message was sent to it: Dovecot may have
# stored it before dying (policy.deliver).
UNCERTAIN = "451 4.3.0 Mail store unavailable"


def _in_inbox(message_id: str, recipients: set[str]) -> set[str]:
    """Recipients whose INBOX holds this Message-ID (Dovecot stored it, then died before
    answering). Rare: only messages with such a failure pay this IMAP search."""
    found = set()
    for address in recipients:
        try:
            with MailStore(address) as store:
                if store.search_header("INBOX", "Message-ID", message_id):
                    found.add(address)
        except StoreUnavailable:
            continue  # cannot tell: deliver (a duplicate is better than a loss)
    return found
