"""What a software does in a BAL over IMAP, into the journal (SC.MSS/CONF.17-18): Dovecot's
mail_log lines of the API LPS sessions (mailboxes/store/dovecot_lps.py names the person in each
line's prefix), read from Dovecot's log from where the last run stopped.

The position is kept in a file next to the log and moved only after the traces of the lines
read are committed: a crash reads the same lines again (a trace may then be written twice,
none is lost). A log shorter than the position was rotated: reading starts again at its top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from accounts.audit import Action, audit_event, audit_record_many
from accounts.models import User
from mailboxes.models import AppCertificate, Mailbox
from mailboxes.software.sessions import certificate_actor

# "imap(<bal>)<pid><session><lps=<national id>>: Info: <event>: <fields>"; a software that
# opened its APP BAL with its certificate is "lps=cert:<SHA-256 of the certificate>".
LINE = re.compile(
    r"imap\((?P<bal>[^)\s]+)\)<\d+><(?P<session>[^>]*)><lps=(?P<actor>\d+|cert:[0-9a-f]{64})>: "
    r"Info: "
    r"(?P<event>expunge|copy from [^:]+|flag_change|mailbox_delete|mailbox_rename"
    r"|Disconnected: [^:]*?)(?::| in=)\s?(?P<fields>.*)$"
)
FIELD = re.compile(r"(\w+)=(\([^)]*\)|<[^>]*>|[^,\s]+)")
ACTIONS = {
    "expunge": Action.MESSAGE_DELETE,
    "copy": Action.MESSAGE_MOVE,
    "flag_change": Action.MESSAGE_FLAG,
    "mailbox_delete": Action.MESSAGE_DELETE,
    "mailbox_rename": Action.MESSAGE_MOVE,
}


@dataclass(frozen=True)
class Seen:
    bal: str
    actor: str
    session: str
    action: str
    details: dict[str, str]


def parse(line: str) -> Seen | None:
    """One trace from one log line of an LPS session; None for anything else."""
    match = LINE.search(line)
    if match is None:
        return None
    event = match["event"]
    fields = dict(FIELD.findall(match["fields"]))
    if event.startswith("Disconnected"):
        # imap_logout_format: the bodies fetched in the session (RFC 3501 FETCH BODY[]).
        count = fields.get("body_count", "0")
        if count in ("", "0"):
            return None
        read = {"count": count}
        return Seen(match["bal"], match["actor"], match["session"], Action.MESSAGE_READ, read)
    name = "copy" if event.startswith("copy from ") else event
    if name == "copy":
        fields["from"] = event.removeprefix("copy from ")
    kept = {k: v for k, v in fields.items() if k in ("uid", "box", "msgid", "flags", "from")}
    return Seen(match["bal"], match["actor"], match["session"], ACTIONS[name], kept)


def _position(path: Path) -> Path:
    return path.with_name(path.name + ".lps-position")


def collect(log: Path) -> int:
    """Write the traces of the LPS lines added to ``log`` since the last run; returns how
    many."""
    marker = _position(log)
    try:
        start = int(marker.read_text() or 0)
    except (FileNotFoundError, ValueError):
        start = 0
    if not log.exists():
        return 0
    if log.stat().st_size < start:
        start = 0  # rotated
    with open(log, "rb") as handle:
        handle.seek(start)
        chunk = handle.read()
    end = start + chunk.rfind(b"\n") + 1  # whole lines only
    found = [
        s for raw in chunk[: end - start].splitlines() if (s := parse(raw.decode(errors="replace")))
    ]
    users = {
        u.national_id: u for u in User.objects.filter(national_id__in={s.actor for s in found})
    }
    # A certificate unbound since is still named by its fingerprint.
    software = {
        f"cert:{c.fingerprint}": certificate_actor(c.common_name)
        for c in AppCertificate.objects.filter(
            fingerprint__in={s.actor[5:] for s in found if s.actor.startswith("cert:")}
        )
    }
    boxes = {
        b.address: b
        for b in Mailbox.objects.filter(address__in={s.bal.lower() for s in found}).select_related(
            "structure"
        )
    }
    events = []
    for seen in found:
        box = boxes.get(seen.bal.lower())
        events.append(
            audit_event(
                action=seen.action,
                actor=users.get(seen.actor),
                actor_label="" if seen.actor in users else software.get(seen.actor, seen.actor),
                target=box,
                structure=box.structure if box else None,
                details={**seen.details, "service": "imap", "session": seen.session},
            )
        )
    with transaction.atomic():
        audit_record_many(events)
    marker.write_text(str(end))
    return len(events)
