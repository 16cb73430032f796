"""Reads of the audit trail: the structure's journal (filterable, CSV) and the history of one
message on a BAL (Référentiel #2 SC.MSS/CONF.17-18: who read, moved, deleted or sent it).

``accounts`` may not import ``mailboxes`` (import-linter): the caller passes the BALs as plain
values (their ``public_id`` as text, and their addresses for the CSV).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.utils.translation import gettext

from accounts.audit import Action, TargetType
from accounts.models import AuditEvent, User
from accounts.typography import octets

PARIS = ZoneInfo("Europe/Paris")
# target_type of the traces written about a BAL (audit_record(target=mailbox)).
MAILBOX_TARGET = TargetType.MAILBOX.value
# target_type of the gateway and relay traces, whose target_id is the Message-ID.
MESSAGE_TARGET = TargetType.MESSAGE.value

# Action -> its label, marked for translation in accounts.audit and translated when shown
# (action_label): values stay plain str.
ACTION_LABELS: dict[str, str] = {str(action.value): str(action.label) for action in Action}

# The traces about one message on a BAL (reads, handling, sending, drafts, read receipts).
HISTORY_ACTIONS = tuple(
    str(action.value)
    for action in (
        Action.MESSAGE_READ,
        Action.MESSAGE_BODY_READ,
        Action.MESSAGE_ATTACHMENT_DOWNLOAD,
        Action.MESSAGE_ATTACHMENT_PREVIEW,
        Action.MESSAGE_PRINTED,
        Action.MESSAGE_FLAG,
        Action.MESSAGE_MOVE,
        Action.MESSAGE_DELETE,
        Action.MESSAGE_RESTORED,
        Action.MESSAGE_SENT,
        Action.DRAFT_SAVED,
        Action.DRAFT_OPENED,
        Action.MDN_SENT,
        Action.MDN_DECLINED,
    )
)
# At most this many candidate traces are examined for one message's history.
HISTORY_WINDOW = 5000

CSV_HEADER = [
    "Date",
    "Heure",
    "Auteur",
    "Identifiant national",
    "Action",
    "BAL",
    "Résultat",
    "Code d'erreur",
    "Adresse IP",
    "Détails",
]
# OWASP "CSV injection": a spreadsheet evaluates a cell that starts with one of these.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def action_label(action: str) -> str:
    """The French label of an action string, or the string itself when unknown."""
    label = ACTION_LABELS.get(action)
    return gettext(label) if label else action


@dataclass
class JournalFilter:
    """What the journal screen asks for; empty fields do not filter.

    ``mailbox_ids``: BAL public ids (text) to keep, None for every BAL; ``person``: part of
    the author's name, national id or recorded label; ``action``: an exact action, or a family
    when it ends with a dot (``"message."``); ``start``/``end``: Paris days, both included;
    ``result``: ``"success"`` or ``"failure"``; ``message_id``: one Message-ID.
    """

    mailbox_ids: list[str] | None = None
    person: str = ""
    action: str = ""
    start: date | None = None
    end: date | None = None
    result: str = ""
    message_id: str = ""


def _paris_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=PARIS)


def _message_key(message_id: str) -> str:
    """A Message-ID without its angle brackets and folding whitespace (a msg-id holds no
    whitespace, RFC 5322 §3.6.4), so that "<a@b>", " <a@b>" and "a@b" compare equal."""
    return "".join(message_id.split()).removeprefix("<").removesuffix(">")


def _json_plain(text: str) -> bool:
    """Whether ``text`` is written as itself inside JSON on every backend (printable ASCII,
    no quote, no backslash), so that a substring search of the JSON text can find it."""
    return all(" " < ch < "\x7f" and ch not in '"\\' for ch in text)


def _mentioning(events: QuerySet[AuditEvent], key: str) -> QuerySet[AuditEvent]:
    """Narrow ``events`` in SQL to the traces that may name the message ``key``.

    Django's JSONField ``contains`` (JSON containment) is not supported on SQLite (the
    embedded mode), so the list ``details["message_ids"]`` is read as JSON text
    (KeyTextTransform: ``->>`` on PostgreSQL, JSON_EXTRACT on SQLite, both giving
    ``["<a@b>", ...]``) and searched for the quoted element. The result is a superset at worst
    (SQLite's LIKE ignores ASCII case): callers that need exactness check in Python
    (``_names``). Only for ids that JSON writes as themselves (``_json_plain``).
    """
    spellings = [f"<{key}>", key]
    in_list = Q()
    for spelling in spellings:
        in_list |= Q(message_ids_text__contains=f'"{spelling}"')
    return events.annotate(message_ids_text=KeyTextTransform("message_ids", "details")).filter(
        Q(details__message_id__in=spellings)
        | in_list
        | Q(target_type=MESSAGE_TARGET, target_id__in=spellings)
    )


def named_messages(event: AuditEvent) -> list[str]:
    """The Message-IDs a trace names, as recorded: ``details["message_id"]`` (a read),
    ``details["message_ids"]`` (flag, move, delete), or the target of a gateway or relay trace."""
    details: Any = event.details if isinstance(event.details, dict) else {}
    named = [details.get("message_id")]
    if isinstance(details.get("message_ids"), list):
        named += details["message_ids"]
    if event.target_type == MESSAGE_TARGET:
        named.append(event.target_id)
    found: list[str] = []
    for n in named:
        if isinstance(n, str) and _message_key(n) and n not in found:
            found.append(n)
    return found


def _names(event: AuditEvent, key: str) -> bool:
    """Whether the trace names the message ``key`` (exact, after _message_key)."""
    return any(_message_key(n) == key for n in named_messages(event))


def _person_id(event: AuditEvent) -> str:
    """The public id of the person a trace is about (membership, right, role), if any."""
    details: Any = event.details if isinstance(event.details, dict) else {}
    value = details.get("user")
    if event.target_type == TargetType.USER:
        value = value or event.target_id
    try:
        return str(uuid.UUID(str(value))) if value else ""
    except ValueError:
        return ""


@dataclass(frozen=True)
class JournalRow:
    """One line of the journal screen: the trace, its French label, the BAL it is about
    (public id, empty otherwise), the messages it names and the person it is about."""

    event: AuditEvent
    label: str
    mailbox_id: str
    message_ids: list[str]
    person: User | None
    details: list[str]


FOLDER_NAMES = {
    "INBOX": "Boîte de réception",
    "Sent": "Envoyés",
    "Drafts": "Brouillons",
    "Trash": "Corbeille",
    "Archives": "Archives",
}
FLAG_NAMES = {"seen": "lu", "flagged": "suivi"}
PURPOSES = {
    "forward": "pour un transfert",
    "reply": "pour une réponse",
    "documents": "pour les documents de santé",
    "closing": "à la fermeture de la BAL",
    "export": "à la demande",
}
SERVICES = {"imap": "IMAP", "submission": "envoi SMTP", "pop": "POP"}
ROLES = {"director": "directeur·rice", "member": "membre", "admin": "administrateur"}
ACCESS_KINDS = {"member": "membre", "delegate": "délégation"}
# Reasons of failure, in words; an unknown code is shown as recorded.
REASONS = {
    "token_expired": "jeton expiré",
    "activity_ended": "activité terminée",
    "denied": "accès refusé",
    "forbidden": "accès refusé",
    "not_found": "introuvable",
    "quota": "quota dépassé",
    "quota_exceeded": "quota dépassé",
    "timeout": "délai dépassé",
    "unreachable": "serveur injoignable",
    "export_missing": "export introuvable",
    "crl_refused": "liste de révocation refusée",
    "whitelist_refused": "liste blanche refusée",
    "unknown_recipient": "destinataire inconnu",
    "not_in_whitelist": "domaine hors liste blanche",
}


def _plural(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n <= 1 else plural}"


def _number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple):
        return len(value)
    return None


def _day(value: object) -> str | None:
    try:
        day = date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
    months = [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ]
    return f"{day.day}{'er' if day.day == 1 else ''} {months[day.month - 1]} {day.year}"


def _folder(name: object) -> str:
    return FOLDER_NAMES.get(str(name), str(name))


def detail_lines(event: AuditEvent) -> list[str]:
    """What a trace records, in French words for the journal screen: folder, number of
    messages or recipients, rights, dates, reason of a failure. Only the keys listed here are
    shown (traces hold identifiers, never content; the person and the Message-IDs are shown
    apart); an unknown key is left out rather than shown raw."""
    d: Any = event.details if isinstance(event.details, dict) else {}
    lines: list[str] = []
    if d.get("folder"):
        lines.append(f"Dossier : {_folder(d['folder'])}")
    if d.get("target"):
        lines.append(f"Vers le dossier : {_folder(d['target'])}")
    for key in ("uids", "message_ids"):
        n = _number(d.get(key))
        if n is not None and n > 1:
            lines.append(_plural(n, "message", "messages"))
            break
    n = _number(d.get("messages"))
    if n is not None:
        lines.append(_plural(n, "message", "messages"))
    n = _number(d.get("folders"))
    if n is not None:
        lines.append(_plural(n, "dossier", "dossiers"))
    if d.get("flag") in FLAG_NAMES:
        verb = "marqué" if d.get("on") else "plus marqué"
        lines.append(f"{verb.capitalize()} comme {FLAG_NAMES[d['flag']]}")
    if "permanent" in d:
        lines.append("Suppression définitive" if d["permanent"] else "Mis à la corbeille")
    if d.get("everywhere"):
        lines.append("Dans tous les dossiers")
    if d.get("part") is not None and _number(d.get("part")) is not None:
        lines.append(f"Pièce jointe n° {d['part']}")
    n = _number(d.get("recipients"))
    if n is not None:
        lines.append(_plural(n, "destinataire", "destinataires"))
    n = _number(d.get("patients"))
    if n:
        lines.append(_plural(n, "patient concerné", "patients concernés"))
    n = _number(d.get("attachments"))
    if n:
        lines.append(_plural(n, "pièce jointe", "pièces jointes"))
    n = _number(d.get("health_documents"))
    if n:
        lines.append(_plural(n, "document de santé", "documents de santé"))
    n = _number(d.get("size"))
    if n:
        lines.append(f"Taille : {octets(n)}")
    if d.get("purpose") in PURPOSES:
        lines.append(PURPOSES[d["purpose"]].capitalize())
    if d.get("domain"):
        lines.append(f"Domaine : {d['domain']}")
    if isinstance(d.get("domains"), list) and d["domains"]:
        lines.append("Domaines : " + ", ".join(map(str, d["domains"])))
    if _number(d.get("attempt")):
        lines.append(f"Tentative n° {d['attempt']}")
    if d.get("kind") in ACCESS_KINDS:
        lines.append(f"Accès : {ACCESS_KINDS[d['kind']]}")
    rights = [
        word
        for key, word in (("organise", "classer"), ("send", "envoyer"), ("manage", "gérer"))
        if d.get(key)
    ]
    if any(key in d for key in ("organise", "send", "manage")):
        lines.append("Droits : lire" + "".join(f", {w}" for w in rights))
    if d.get("until") and (until := _day(d["until"])):
        lines.append(f"Jusqu'au {until}")
    if d.get("old_role") or d.get("new_role"):
        old = ROLES.get(str(d.get("old_role")), str(d.get("old_role") or "aucun"))
        new = ROLES.get(str(d.get("new_role")), str(d.get("new_role") or "aucun"))
        lines.append(f"Rôle : {old} → {new}")
    if isinstance(d.get("fields"), list) and d["fields"]:
        lines.append("Champs modifiés : " + ", ".join(map(str, d["fields"])))
    starts, ends = _day(d.get("from")), _day(d.get("to"))
    if starts and ends:
        lines.append(f"Du {starts} au {ends}")
    if d.get("address") and isinstance(d.get("address"), str):
        lines.append(f"Adresse : {d['address']}")
    if "before" in d and "after" in d:
        lines.append(f"Quota : {octets(d['before'])} → {octets(d['after'])}")
    if d.get("service") in SERVICES:
        lines.append(f"Service : {SERVICES[d['service']]}")
    if d.get("software"):
        lines.append(f"Logiciel : {d['software']}")
    if "enabled" in d:
        if d["enabled"]:
            lines.append(f"Avis activés, toutes les {d.get('interval')} minutes")
        else:
            lines.append("Avis désactivés")
    n = _number(d.get("accesses_removed"))
    if n is not None:
        lines.append(_plural(n, "accès retiré", "accès retirés"))
    n = _number(d.get("deleted"))
    if n is not None:
        lines.append(_plural(n, "trace supprimée", "traces supprimées"))
    reason = event.error_code or (d.get("reason") if isinstance(d.get("reason"), str) else "")
    if reason and (event.result != "success" or not event.error_code):
        prefix = "Motif de l'échec" if event.result != "success" else "Motif"
        lines.append(f"{prefix} : {REASONS.get(reason, reason)}")
    return lines


def journal_rows(events: Iterable[AuditEvent]) -> list[JournalRow]:
    """The detail of each trace for the journal screen, with the persons named in one query.
    Message subjects are not here: traces never hold content (the console looks them up in
    the BAL, for those who may read it)."""
    events = list(events)
    wanted = {pid for pid in map(_person_id, events) if pid}
    people = {str(u.public_id): u for u in User.objects.filter(public_id__in=wanted)}
    return [
        JournalRow(
            event=event,
            label=action_label(event.action),
            mailbox_id=event.target_id if event.target_type == MAILBOX_TARGET else "",
            message_ids=named_messages(event),
            person=people.get(_person_id(event)),
            details=detail_lines(event),
        )
        for event in events
    ]


def journal_events(
    *, structure_id: int, mailbox_ids: list[str], flt: JournalFilter
) -> QuerySet[AuditEvent]:
    """The structure's traces matching ``flt``, newest first, with their actor.

    ``mailbox_ids``: the public ids of the structure's BALs (the caller reads them in
    mailboxes). A trace belongs to the structure when it carries its id or targets one of
    those BALs; nothing else is ever returned, whatever ``flt`` asks (a BAL of another
    structure in ``flt.mailbox_ids`` matches nothing). Every condition is on an indexed
    column first: structure (foreign key), (target_type, target_id), occurred_at.
    """
    own_boxes = [str(i) for i in mailbox_ids]
    scope = Q(structure_id=structure_id)
    if own_boxes:
        scope |= Q(target_type=MAILBOX_TARGET, target_id__in=own_boxes)
    events = AuditEvent.objects.filter(scope)

    if flt.mailbox_ids is not None:
        allowed = set(own_boxes)
        wanted = [i for i in map(str, flt.mailbox_ids) if i in allowed]
        events = events.filter(target_type=MAILBOX_TARGET, target_id__in=wanted)
    for term in flt.person.split():
        events = events.filter(
            Q(actor__first_name__icontains=term)
            | Q(actor__last_name__icontains=term)
            | Q(actor__username__icontains=term)
            | Q(actor__national_id__icontains=term)
            | Q(actor_label__icontains=term)
        )
    action = flt.action.strip()
    if action.endswith("."):
        events = events.filter(action__startswith=action)
    elif action:
        events = events.filter(action=action)
    # Paris days as half-open instants, so that the occurred_at index is used.
    if flt.start is not None:
        events = events.filter(occurred_at__gte=_paris_midnight(flt.start))
    if flt.end is not None:
        events = events.filter(occurred_at__lt=_paris_midnight(flt.end + timedelta(days=1)))
    if flt.result in AuditEvent.Result.values:
        events = events.filter(result=flt.result)
    key = _message_key(flt.message_id)
    if key:
        if _json_plain(key):
            events = _mentioning(events, key)
        else:  # not searchable as JSON text: exact matches on the scalar fields only
            spellings = [f"<{key}>", key]
            events = events.filter(
                Q(details__message_id__in=spellings)
                | Q(target_type=MESSAGE_TARGET, target_id__in=spellings)
            )
    return events.select_related("actor").order_by("-occurred_at", "-id")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def _detail_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_detail_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if isinstance(value, bool):
        return "oui" if value else "non"
    return "" if value is None else str(value)


def _details(details: object) -> str:
    """Compact ``clé=valeur`` pairs. Traces hold identifiers only (accounts.audit), so this
    shows what was recorded and nothing more."""
    if not isinstance(details, dict):
        return ""
    return " ".join(f"{key}={_detail_value(value)}" for key, value in sorted(details.items()))


def journal_csv_rows(
    events: QuerySet[AuditEvent], *, mailboxes: Mapping[str, str] | None = None
) -> Iterator[list[str]]:
    """The French header, then one row per trace (streamed by chunks of 2,000).

    ``mailboxes``: BAL public id -> address, to name the BAL instead of its id. Dates and
    times are Paris time. Every cell that a spreadsheet would evaluate as a formula is
    prefixed with an apostrophe.
    """
    names = mailboxes or {}
    yield list(CSV_HEADER)
    for event in events.iterator(chunk_size=2000):
        when = event.occurred_at.astimezone(PARIS)
        actor = event.actor
        bal = ""
        if event.target_type == MAILBOX_TARGET:
            bal = names.get(event.target_id, event.target_id)
        yield [
            _cell(value)
            for value in (
                when.strftime("%d/%m/%Y"),
                when.strftime("%H:%M:%S"),
                (actor.display_name if actor else "") or event.actor_label,
                actor.national_id if actor and actor.national_id else "",
                action_label(event.action),
                bal,
                str(AuditEvent.Result(event.result).label).capitalize()
                if event.result in AuditEvent.Result.values
                else event.result,
                event.error_code,
                event.ip_address or "",
                _details(event.details),
            )
        ]


def message_history(*, mailbox_id: str, message_id: str) -> list[AuditEvent]:
    """Every trace on the BAL ``mailbox_id`` about the message ``message_id`` (read,
    attachment download, flag, move, delete, sent, read receipt), oldest first, with actors.

    The caller has checked that the person may see this BAL's journal. Candidates are taken
    in SQL by target and action (the (target_type, target_id) index), narrowed by the id as
    JSON text when it can be (``_mentioning``), then matched exactly in Python (``_names``):
    that works alike on PostgreSQL and SQLite. At most the HISTORY_WINDOW newest candidates
    are examined.
    """
    key = _message_key(message_id)
    if not key:
        return []
    events = AuditEvent.objects.filter(
        target_type=MAILBOX_TARGET, target_id=str(mailbox_id), action__in=HISTORY_ACTIONS
    )
    if _json_plain(key):
        events = _mentioning(events, key)
    candidates = events.select_related("actor").order_by("-occurred_at", "-id")[:HISTORY_WINDOW]
    found = [event for event in candidates if _names(event, key)]
    found.reverse()
    return found
