"""An IMAP session of a software ends with its token (SC.MSS/CONF.10): Dovecot does not check
a token again once logged in, so the portal disconnects, when the token's ``exp`` has passed,
the sessions the person opened on that BAL from that address (``doveadm kick``). The software
reopens one with a refreshed token (CONF.11); a revoked token cannot be refreshed.

The portal never keeps the token (CONF.28), so a revocation ends the session at the token's
expiry (at most PSC's token lifetime, 120 s, later), not at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from accounts.audit import Action, audit_record
from mailboxes.models import SoftwareLogin
from mailboxes.store import dovecot as store

Kick = Callable[[str, str | None], None]


def doveadm_kick(address: str, remote: str | None) -> None:
    """Disconnect ``address``'s IMAP sessions from ``remote`` (all of them without one)."""
    store.sessions_kick(address, remote)


def sessions_end_expired(*, kick: Kick = doveadm_kick) -> int:
    """End every IMAP session whose token has expired; returns how many. Each end is traced;
    rows ended more than a day ago are forgotten."""
    now = timezone.now()
    ended = 0
    due = SoftwareLogin.objects.filter(ended_at=None, expires_at__lte=now).select_related(
        "mailbox__structure", "user"
    )
    for row in due:
        kick(row.mailbox.address, row.remote)
        if SoftwareLogin.objects.filter(pk=row.pk, ended_at=None).update(ended_at=now):
            ended += 1
            audit_record(
                action=Action.SOFTWARE_SESSION_ENDED,
                actor=row.user,
                target=row.mailbox,
                structure=row.mailbox.structure,
                ip=row.remote,
                details={"service": "imap", "reason": "token_expired"},
            )
    SoftwareLogin.objects.filter(ended_at__lt=now - timedelta(days=1)).delete()
    return ended
