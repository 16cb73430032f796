"""Signatures: each person's plain-text signature for each BAL they write from, inserted on
their new messages and replies (never on a forward or a resumed draft, which have theirs)."""

from __future__ import annotations

from django.db import transaction

from accounts.models import User
from mailboxes.access import Access, Grant, require
from mailboxes.models import Signature

SEPARATOR = "-- "  # RFC 3676 §4.3: the signature separator line, "-- " with its space


def signature_text(*, grant: Grant, actor: User) -> str:
    """The signature ``actor`` set for the BAL of ``grant``, "" when none."""
    found = Signature.objects.filter(mailbox=grant.mailbox, user=actor).first()
    return found.text if found else ""


@transaction.atomic
def signature_set(*, grant: Grant, actor: User, text: str) -> None:
    """Set (or, with a blank ``text``, remove) ``actor``'s signature for the BAL of ``grant``.
    Raises RightMissing without the send right: a signature is for writing from the BAL. Not
    an audit event: a preference of the person, not an act on mail."""
    require(grant, Access.SEND)
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()
    if not text:
        Signature.objects.filter(mailbox=grant.mailbox, user=actor).delete()
        return
    Signature.objects.update_or_create(mailbox=grant.mailbox, user=actor, defaults={"text": text})


def signed(body: str, signature: str) -> str:
    """``body`` (empty for a new message, the quote for a reply) with the signature above it,
    where the cursor starts: « \\n\\n-- \\nsignature\\n » then the quote."""
    if not signature:
        return body
    block = f"\n\n{SEPARATOR}\n{signature}\n"
    return f"{block}\n{body.removeprefix(chr(10) * 2)}" if body else block
