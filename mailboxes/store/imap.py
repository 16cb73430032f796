"""IMAP client of the portal: one BAL, opened as ``<address>*<master user>``.

Callers must have checked access themselves (mailboxes.access.access_mailbox): Dovecot only
knows that the portal is allowed to open every BAL.

Every IMAP command goes through one guard (``_Guarded``): no argument may hold a C0 control
character or DEL, whoever calls. imapclient writes a search value inside a quoted string as it
is, so a CR/LF there ends the command line and Dovecot runs the rest as new commands; search
values are also sent as literals (RFC 3501 §4.3), which are counted and cannot end a command.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, cast

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from imapclient import IMAPClient
from imapclient.datetime_util import format_criteria_date
from imapclient.exceptions import IMAPClientError
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.imapclient import _literal
from imapclient.response_parser import parse_fetch_response, parse_message_list, parse_response

from mailboxes.errors import ControlCharacters, StoreUnavailable
from mailboxes.store import lmtp
from mailboxes.store.dovecot import instance_from_settings
from mailboxes.store.headers import Address, decode_text, header_date, message_id_of

SPECIAL_FOLDERS = {
    "INBOX": _("Boîte de réception"),
    "Sent": _("Envoyés"),
    "Drafts": _("Brouillons"),
    "Trash": _("Corbeille"),
    "Accuses": _("Accusés"),  # read receipts and DSNs of success (store.lmtp.folder_for)
}
FOLDER_ORDER = ["INBOX", "Drafts", "Sent", "Accuses", "Trash"]
SORT_ORDERS = {
    "date": [b"REVERSE", b"DATE"],
    "date-asc": [b"DATE"],
    "sender": [b"FROM"],
    "subject": [b"SUBJECT"],
    "size": [b"REVERSE", b"SIZE"],
    "size-asc": [b"SIZE"],
    "sender-desc": [b"REVERSE", b"FROM"],
    "subject-desc": [b"REVERSE", b"SUBJECT"],
    "arrival-asc": [b"ARRIVAL"],
}
# A folder name of one's own: no hierarchy separator (Dovecot's is « / », deploy/dovecot), no
# LIST wildcard (RFC 3501 §6.3.8), no control character; at most 60 characters.
FOLDER_NAME = re.compile(r"^[^/*%\x00-\x1f\x7f\\\"]{1,60}$")
TRASH = "Trash"
SENT = "Sent"
DRAFTS = "Drafts"
# The handover of a team BAL (mailboxes.models.MessageHandling says who and when); keywords
# so that the list's filters are IMAP searches (RFC 3501 §6.4.4 KEYWORD / UNKEYWORD).
TAKEN = b"$MSSPrisEnCharge"
DONE = b"$MSSTermine"
MDN_SENT = b"$MDNSent"  # RFC 3503: the read-receipt question of a message is settled
MAX_SUBJECT = 500  # characters shown in a list row
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")  # C0 controls and DEL
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")


# What a command can raise when Dovecot fails mid-session (a reader that may go without the
# answer catches these; MailStore's exit turns them into StoreUnavailable otherwise).
IMAP_ERRORS: tuple[type[Exception], ...] = (IMAPClientError, OSError)


def has_control_characters(value: str) -> bool:
    """Whether ``value`` holds a C0 control character (CR, LF, NUL, TAB...) or DEL."""
    return CONTROL_CHARACTERS.search(value) is not None


class MessageContent(bytes):
    """A whole message for APPEND, the one argument that may hold line breaks: imapclient
    sends it as a literal (RFC 3501 §6.3.11), whose length is announced before it."""


def _refuse_control_characters(value: object) -> None:
    if isinstance(value, MessageContent):
        return
    if isinstance(value, str):
        if CONTROL_CHARACTERS.search(value):
            raise ControlCharacters()
    elif isinstance(value, bytes | bytearray):
        if _CONTROL_BYTES.search(value):
            raise ControlCharacters()
    elif isinstance(value, dict):
        _refuse_control_characters([*value.keys(), *value.values()])
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _refuse_control_characters(item)


class _Guarded:
    """The IMAPClient of a MailStore seen through the one check every command goes through:
    an argument holding a control character raises ControlCharacters before anything is
    sent, so the session stays usable and Dovecot never sees it."""

    def __init__(self, client: IMAPClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def guarded(*args: Any, **kwargs: Any) -> Any:
            _refuse_control_characters(args)
            _refuse_control_characters(kwargs)
            return attribute(*args, **kwargs)

        return guarded


@dataclass(frozen=True)
class Folder:
    name: str
    label: str
    total: int
    unread: int
    special: bool
    uidnext: int = 0  # the UID the next message will get (RFC 3501 §2.3.1.1)


@dataclass(frozen=True)
class Summary:
    uid: int
    subject: str
    sender: Address | None
    recipients: list[Address]
    date: datetime | None
    size: int
    seen: bool
    flagged: bool
    answered: bool
    has_attachments: bool
    mdn_sent: bool = False  # $MDNSent keyword (RFC 3503): the read-receipt question is settled
    message_id: str = ""
    author: Address | None = None  # Sender: when it is not the From: address (RFC 5322 §3.6.2)
    taken: bool = False
    done: bool = False
    folder: str = ""  # the folder it lives in (a search across every folder shows it)


@dataclass(frozen=True)
class Page:
    folder: str
    messages: list[Summary]
    total: int
    number: int
    per_page: int
    # The conversation view: the UIDs of each conversation of the page, in the order shown
    # (``total`` and ``per_page`` then count conversations).
    threads: tuple[tuple[int, ...], ...] = ()

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def has_previous(self) -> bool:
        return self.number > 1


@dataclass(frozen=True)
class Criteria:
    sender: str = ""
    subject: str = ""
    body: str = ""
    since: date | None = None
    before: date | None = None
    # A team BAL's handover: "a-traiter" (neither taken nor done), "termines", or "moi" (taken,
    # restricted to ``message_ids``, the ones the person took: the database knows who).
    handling: str = ""
    message_ids: tuple[str, ...] = ()
    # The quick search box: sender, subject or text at once.
    text: str = ""
    unread: bool = False
    flagged: bool = False
    # IMAP cannot search BODYSTRUCTURE (RFC 3501 §6.4.4 has no key for it): a message with
    # attachments is approximated by its top-level « Content-Type: multipart/mixed », the
    # structure every mailer gives to a text with files joined (RFC 2046 §5.1.3). A
    # multipart/related HTML mail with inline images only is not found; a multipart/mixed
    # whose only part is text is.
    attachments: bool = False

    def is_empty(self) -> bool:
        return not (
            self.sender
            or self.subject
            or self.body
            or self.since
            or self.before
            or self.handling
            or self.text
            or self.unread
            or self.flagged
            or self.attachments
        )

    def imap(self) -> list[bytes]:
        """IMAP SEARCH keys (RFC 3501 §6.4.4), each text a literal (§4.3) in UTF-8; BEFORE is
        exclusive, so the day after is used."""
        keys: list[bytes] = []
        if self.text:
            # OR is binary (§6.4.4): OR FROM x (OR SUBJECT x TEXT x), no parentheses needed.
            literal = self.text.encode("utf-8")
            keys += [b"OR", b"FROM", _literal(literal), b"OR", b"SUBJECT", _literal(literal)]
            keys += [b"TEXT", _literal(literal)]
        if self.unread:
            keys.append(b"UNSEEN")
        if self.flagged:
            keys.append(b"FLAGGED")
        if self.attachments:
            keys += [b"HEADER", b"Content-Type", b"multipart/mixed"]
        for key, text in ((b"FROM", self.sender), (b"SUBJECT", self.subject), (b"BODY", self.body)):
            if text:
                keys += [key, _literal(text.encode("utf-8"))]
        if self.since:
            keys += [b"SINCE", format_criteria_date(self.since)]
        if self.before and self.before < date.max:  # before the end of time: no key
            keys += [b"BEFORE", format_criteria_date(self.before + timedelta(days=1))]
        if self.handling == "a-traiter":
            keys += [b"UNKEYWORD", TAKEN, b"UNKEYWORD", DONE]
        elif self.handling == "termines":
            keys += [b"KEYWORD", DONE]
        elif self.handling == "moi":
            keys += [b"KEYWORD", TAKEN, b"UNKEYWORD", DONE, *_any_message_id(self.message_ids)]
        return keys or [b"ALL"]


def _any_message_id(ids: Sequence[str]) -> list[bytes]:
    """SEARCH keys matching any of ``ids`` (OR is binary, RFC 3501 §6.4.4); none matches no
    message (a UID no message can have)."""
    keys: list[bytes] = []
    for mid in ids:
        key = [b"HEADER", b"Message-ID", _literal(mid.encode("utf-8"))]
        keys = key if not keys else [b"OR", *key, *keys]  # OR a (OR b c): no parentheses
    return keys or [b"UID", b"4294967295"]


def _addresses(items: Sequence[Any] | None) -> list[Address]:
    result = []
    for item in items or ():
        mailbox = decode_text(item.mailbox)
        host = decode_text(item.host)
        if not mailbox and not host:
            continue  # group syntax markers (RFC 3501 §7.4.2)
        result.append(
            Address(name=decode_text(item.name), email=f"{mailbox}@{host}" if host else mailbox)
        )
    return result


def _has_attachments(structure: Any) -> bool:
    """Whether a BODYSTRUCTURE holds a part with a disposition of attachment or a filename."""
    try:
        if structure.is_multipart:
            parts = structure[0] if isinstance(structure[0], list) else []
            return any(_has_attachments(part) for part in parts)
        disposition = structure[8] if len(structure) > 8 else None
        if disposition and isinstance(disposition, tuple) and disposition[0]:
            return disposition[0].lower() == b"attachment"
        return False
    except (IndexError, TypeError, AttributeError):
        return False


def _summary(uid: int, data: dict[bytes, Any], folder: str = "") -> Summary:
    envelope = data.get(b"ENVELOPE")
    flags = set(data.get(b"FLAGS", ()))
    senders = _addresses(envelope.from_ if envelope else None)
    when = header_date(envelope.date if envelope else None)
    return Summary(
        uid=uid,
        subject=decode_text(envelope.subject if envelope else None)[:MAX_SUBJECT],
        sender=senders[0] if senders else None,
        recipients=_addresses(envelope.to if envelope else None),
        date=when,
        size=int(data.get(b"RFC822.SIZE", 0)),
        seen=b"\\Seen" in flags,
        flagged=b"\\Flagged" in flags,
        answered=b"\\Answered" in flags,
        has_attachments=_has_attachments(data.get(b"BODYSTRUCTURE")),
        mdn_sent=MDN_SENT in flags,
        message_id=decode_text(envelope.message_id if envelope else None).strip(),
        author=_author(envelope, senders),
        taken=TAKEN in flags,
        done=DONE in flags,
        folder=folder,
    )


def _author(envelope: Any, senders: list[Address]) -> Address | None:
    """The Sender: of a message when it names someone else than its From: (a colleague who
    wrote from a team BAL, a delegate); IMAP fills the envelope's sender with From: when the
    header is absent (RFC 3501 §7.4.2)."""
    authors = _addresses(envelope.sender if envelope else None)
    if not authors or not senders or authors[0].email.lower() == senders[0].email.lower():
        return None
    return authors[0]


class _UnixIMAP4(IMAP4WithTimeout):
    """imaplib's IMAP4 over a unix socket; ``host`` is its path."""

    def _get_capabilities(self) -> None:
        # Dovecot's greeting carries its capabilities in a response code (RFC 3501 §7.1): no
        # CAPABILITY round trip before the login. Taken out of the untagged answers, so that
        # the login's own list (post-authentication) is the one imapclient keeps next.
        greeted = self.untagged_responses.pop("CAPABILITY", None)
        if not greeted:
            super()._get_capabilities()
            return
        self.capabilities = tuple(str(greeted[-1], self._encoding).upper().split())

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout if timeout is not None else self._timeout)
            sock.connect(self.host)
        except OSError:
            sock.close()
            raise
        return sock


class _SocketIMAPClient(IMAPClient):
    """IMAPClient on Dovecot's portal socket (``run/imap-portal``, opened by the portal's user
    only): the master password never crosses a network (mailboxes/store/dovecot.py)."""

    def _create_IMAP4(self) -> IMAP4WithTimeout:
        return _UnixIMAP4(self.host, 0, getattr(self._timeout, "connect", None))


class MailStore:
    """One IMAP session on one BAL, over Dovecot's portal socket. Use as a context manager."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: IMAPClient | None = None
        # What this session already knows, so that one page asks Dovecot once: the folder
        # names (LIST, forgotten when this session creates, renames or deletes one) and the
        # folder selected, with its mode (SELECT or EXAMINE, RFC 3501 §6.3.1-2).
        self._names: list[str] | None = None
        self._selected: tuple[str, bool] | None = None
        # Of the folder selected: its EXISTS when selected, and the sequence number of each
        # message read since (RFC 3501 §2.3.1.2), so that ``around`` searches nothing.
        self._exists = 0
        self._numbers: dict[int, int] = {}

    def __enter__(self) -> MailStore:
        try:
            raw = _SocketIMAPClient(
                str(instance_from_settings().imap_socket),
                ssl=False,
                timeout=settings.DOVECOT_TIMEOUT,
            )
            raw.normalise_times = False  # keep the sender's offset; we convert for display
            # Typed as the client it wraps: every method is the client's, checked first.
            client = cast(IMAPClient, _Guarded(raw))
            client.login(
                f"{self.address}{'*'}{settings.DOVECOT_MASTER_USER}",
                settings.DOVECOT_MASTER_PASSWORD,
            )
            # Kept now from the login's answer (Dovecot's OK carries them): imapclient asks
            # for LITERAL+ before each raw command (SEARCH, SORT, THREAD...), and once a
            # SELECT has flushed imaplib's untagged answers, that costs a CAPABILITY command.
            client.capabilities()
        except (TimeoutError, OSError, ssl.SSLError, IMAPClientError) as exc:
            raise StoreUnavailable() from exc
        self._client = client
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._client is not None:
            # LOGOUT (RFC 3501 §6.1.3) is written, and the socket closed without waiting for
            # its BYE: every command before it has had its answer, and Dovecot closes the
            # folder while the page goes on (a unix socket keeps what was written for it).
            imap = self._client._imap
            with suppress(OSError, IMAPClientError):
                imap.send(imap._new_tag() + b" LOGOUT\r\n")
            with suppress(OSError):
                imap.shutdown()
            self._client = None
        self._names = self._selected = None
        if isinstance(exc, IMAPClientError | OSError):
            # A protocol or network failure mid-session: the person gets a clear, retryable error.
            raise StoreUnavailable() from exc

    @property
    def client(self) -> IMAPClient:
        assert self._client is not None, "use MailStore as a context manager"
        return self._client

    # -- folders ---------------------------------------------------------------------------

    def folder_names(self) -> list[str]:
        """The BAL's selectable folders (LIST "" "*", RFC 3501 §6.3.8), asked once a session."""
        if self._names is None:
            self._names = [
                name
                for flags, _delim, name in self.client.list_folders()
                if b"\\Noselect" not in flags
            ]
        return list(self._names)

    def select(self, folder: str, *, readonly: bool = False) -> None:
        """SELECT (or EXAMINE when ``readonly``) ``folder``, unless this session already has
        it selected in that mode: a page that reads then lists one folder selects it once."""
        if self._selected == (folder, readonly):
            return
        self._selected = None  # a failed SELECT leaves no folder selected (RFC 3501 §6.3.1)
        self._numbers = {}
        answer = self.client.select_folder(folder, readonly=readonly)
        self._exists = int(answer.get(b"EXISTS", 0))
        self._selected = (folder, readonly)

    def folders(self, *, counts: bool = True) -> list[Folder]:
        """The BAL's folders in the webmail's order, with their counts (a STATUS each, RFC
        3501 §6.3.10); ``counts=False``: names and labels only, from the LIST this session
        already has (total, unread and uidnext then 0), for a list of folders to move to."""
        result = []
        for name in self.folder_names():
            status = (
                self.client.folder_status(name, [b"MESSAGES", b"UNSEEN", b"UIDNEXT"])
                if counts
                else {}
            )
            result.append(
                Folder(
                    name=name,
                    label=str(SPECIAL_FOLDERS.get(name, name)),
                    total=int(status.get(b"MESSAGES", 0)),
                    unread=int(status.get(b"UNSEEN", 0)),
                    special=name in SPECIAL_FOLDERS,
                    uidnext=int(status.get(b"UIDNEXT", 0)),
                )
            )
        rank = {name: i for i, name in enumerate(FOLDER_ORDER)}
        return sorted(result, key=lambda f: (rank.get(f.name, len(rank)), f.name.lower()))

    def size(self) -> int:
        """Bytes held by the BAL, every folder included: the sum of each folder's STATUS SIZE
        (RFC 8438), as Dovecot counts it, wherever the mail is stored (this process's disk, a
        volume it does not mount, a backend behind the proxy)."""
        return sum(
            int(self.client.folder_status(name, [b"SIZE"])[b"SIZE"]) for name in self.folder_names()
        )

    def unread(self, folder: str = "INBOX") -> int:
        return int(self.client.folder_status(folder, [b"UNSEEN"])[b"UNSEEN"])

    def arrivals(self, folder: str, since: int) -> tuple[int, int]:
        """(unread, arrived): the folder's unread count and how many of its messages have a UID
        of at least ``since`` (the UIDNEXT a page was shown with). Never selects the folder:
        STATUS only, so nothing is marked and nothing else changes."""
        status = self.client.folder_status(folder, [b"UNSEEN", b"UIDNEXT"])
        unread, uidnext = int(status[b"UNSEEN"]), int(status[b"UIDNEXT"])
        if uidnext <= since:
            return unread, 0
        self.select(folder, readonly=True)
        # "n:*" also matches the last message when its UID is below n (RFC 3501 §6.4.8).
        uids = self.client.search([b"UID", f"{since}:*".encode()])
        return unread, sum(1 for uid in uids if uid >= since)

    def folder_exists(self, folder: str) -> bool:
        """Whether ``folder`` is one of the BAL's folders. Compared with the real list, never
        sent as a LIST pattern, where ``*`` and ``%`` match any name (RFC 3501 §6.3.8); INBOX
        in any case (§5.1)."""
        _refuse_control_characters(folder)
        names = self.folder_names()
        return folder in names or (folder.upper() == "INBOX" and "INBOX" in names)

    def append(self, folder: str, raw: bytes, flags: Sequence[bytes] = (b"\\Seen",)) -> None:
        """Store a message we wrote (the Sent copy, a draft) in ``folder`` (RFC 3501 §6.3.11)."""
        self.client.append(folder, MessageContent(raw), flags=list(flags))

    def _search(self, keys: list[bytes], *, sort: list[bytes] | None = None) -> list[int]:
        """UID SEARCH (RFC 3501 §6.4.4), or UID SORT by ``sort`` (RFC 5256). Built here because
        imapclient's search() and sort() put texts in quoted strings; its command writer sends
        a ``_literal`` as a literal (imapclient is pinned: these two names are not public)."""
        texts = any(isinstance(key, _literal) for key in keys)
        if sort is None:
            args = [b"CHARSET", b"UTF-8", *keys] if texts else keys
            return list(parse_message_list(self.client._raw_command_untagged(b"SEARCH", args)))
        order = b"(" + b" ".join(sort) + b")"
        found = self.client._raw_command_untagged(b"SORT", [order, b"UTF-8", *keys], unpack=True)
        return [int(uid) for uid in (found or b"").split()]

    # -- listing ---------------------------------------------------------------------------

    def ordered_uids(
        self, folder: str, *, criteria: Criteria | None = None, order: str = "arrival"
    ) -> list[int]:
        """The UIDs of ``folder`` matching ``criteria``, in the list's order. Default order:
        last arrived first (UIDs grow with arrival, RFC 3501 §2.3.1.1); other orders use
        server-side SORT (RFC 5256)."""
        self.select(folder, readonly=True)
        keys = criteria.imap() if criteria else [b"ALL"]
        if order == "arrival":
            return sorted(self._search(keys), reverse=True)
        return self._search(keys, sort=SORT_ORDERS[order])

    def page(
        self,
        folder: str,
        *,
        number: int = 1,
        per_page: int = 50,
        criteria: Criteria | None = None,
        order: str = "arrival",
    ) -> Page:
        """One page of ``folder`` in the list's order (``ordered_uids``)."""
        uids = self.ordered_uids(folder, criteria=criteria, order=order)
        total = len(uids)
        number = max(1, min(number, max(1, -(-total // per_page))))
        chunk = uids[(number - 1) * per_page : number * per_page]
        fetched = (
            self.client.fetch(chunk, ["ENVELOPE", "FLAGS", "RFC822.SIZE", "BODYSTRUCTURE"])
            if chunk
            else {}
        )
        messages = [_summary(uid, fetched[uid], folder) for uid in chunk if uid in fetched]
        return Page(folder=folder, messages=messages, total=total, number=number, per_page=per_page)

    def around(self, folder: str, uid: int) -> tuple[int | None, int | None, int, int]:
        """Where ``uid`` stands in ``folder`` listed by arrival, newest first (``page``'s
        default order): (the UID above it, the UID below it, its 1-based position or 0 when
        it is not there, the folder's total). Nothing is searched: a selected folder numbers
        its messages 1 to EXISTS in ascending UID order (RFC 3501 §2.3.1.2), so the total is
        EXISTS, the position follows from the message's number (known from the FETCH that
        read it in this session, else one FETCH of its UID) and the neighbours are the
        numbers on either side (one FETCH of their UIDs). The folder stays selected as it is
        when this session has it already."""
        if self._selected is None or self._selected[0] != folder:
            self.select(folder, readonly=True)
        if self.client._imap.untagged_responses.get("EXPUNGE"):
            # Numbers moved since they were learnt (EXPUNGE, RFC 3501 §7.4.1): select again.
            mode = self._selected is not None and self._selected[1]
            self._selected = None
            self.select(folder, readonly=mode)
        number = self._numbers.get(uid)
        if number is None and 0 < uid < 2**32:
            found = self.client.fetch([uid], ["UID"])
            number = int(found[uid][b"SEQ"]) if uid in found else None
        # Mail that arrived meanwhile is announced by an untagged EXISTS (RFC 3501 §7.3.1);
        # imaplib's SELECT replaced the dict of those answers: read it now.
        untagged = self.client._imap.untagged_responses
        total = int(untagged["EXISTS"][-1]) if untagged.get("EXISTS") else self._exists
        if number is None or not 0 < number <= total:
            return None, None, 0, total
        wanted = [n for n in (number + 1, number - 1) if 0 < n <= total]
        uids: dict[int, int] = {}
        if wanted:
            answer = self.client._raw_command_untagged(
                b"FETCH", [",".join(map(str, wanted)).encode(), b"(UID)"], uid=False
            )
            for n, data in parse_fetch_response(answer, False, False).items():
                if n in wanted and b"UID" in data:
                    uids[int(n)] = int(data[b"UID"])
        return uids.get(number + 1), uids.get(number - 1), total - number + 1, total

    def threads(self, folder: str, *, criteria: Criteria | None = None) -> list[list[int]]:
        """The conversations of ``folder`` matching ``criteria``: UID THREAD REFERENCES
        (RFC 5256 §3: by References / In-Reply-To, then subject), each conversation's UIDs in
        its tree order (the first message first), the conversation with the latest arrival
        first."""
        self.select(folder, readonly=True)
        keys = criteria.imap() if criteria else [b"ALL"]
        data = self.client._raw_command_untagged(b"THREAD", [b"REFERENCES", b"UTF-8", *keys])
        found = [_flatten(tree) for tree in parse_response(data)]
        found = [uids for uids in found if uids]
        return sorted(found, key=max, reverse=True)

    def thread_page(
        self,
        folder: str,
        *,
        number: int = 1,
        per_page: int = 50,
        criteria: Criteria | None = None,
    ) -> Page:
        """One page of conversations of ``folder`` (``threads``)."""
        found = self.threads(folder, criteria=criteria)
        total = len(found)
        number = max(1, min(number, max(1, -(-total // per_page))))
        chunk = found[(number - 1) * per_page : number * per_page]
        uids = [uid for thread in chunk for uid in thread]
        fields = ["ENVELOPE", "FLAGS", "RFC822.SIZE", "BODYSTRUCTURE"]
        fetched = self.client.fetch(uids, fields) if uids else {}
        messages = [_summary(uid, fetched[uid], folder) for uid in uids if uid in fetched]
        return Page(
            folder=folder,
            messages=messages,
            total=total,
            number=number,
            per_page=per_page,
            threads=tuple(tuple(t) for t in chunk),
        )

    def everywhere(
        self, folders: Sequence[str], *, criteria: Criteria, limit: int = 500
    ) -> list[tuple[str, int]]:
        """(folder, UID) of the messages matching ``criteria`` in every one of ``folders``,
        newest first by SORT (REVERSE DATE) within a folder, then merged by date; at most
        ``limit`` (the most recent of each folder first)."""
        found: list[tuple[datetime, str, int]] = []
        for name in folders:
            self.select(name, readonly=True)
            uids = self._search(criteria.imap(), sort=SORT_ORDERS["date"])[:limit]
            if not uids:
                continue
            for uid, data in self.client.fetch(uids, ["INTERNALDATE"]).items():
                when = data.get(b"INTERNALDATE")
                found.append((_comparable(when), name, int(uid)))
        found.sort(key=lambda item: item[0], reverse=True)
        return [(name, uid) for _when, name, uid in found[:limit]]

    def summaries(self, refs: Sequence[tuple[str, int]]) -> list[Summary]:
        """The list rows of these (folder, UID), in that order (a page of ``everywhere``)."""
        by_folder: dict[str, list[int]] = {}
        for name, uid in refs:
            by_folder.setdefault(name, []).append(uid)
        fetched: dict[tuple[str, int], Summary] = {}
        for name, uids in by_folder.items():
            self.select(name, readonly=True)
            data = self.client.fetch(uids, ["ENVELOPE", "FLAGS", "RFC822.SIZE", "BODYSTRUCTURE"])
            for uid in uids:
                if uid in data:
                    fetched[(name, uid)] = _summary(uid, data[uid], name)
        return [fetched[ref] for ref in refs if ref in fetched]

    # -- folders of one's own ----------------------------------------------------------------

    def folder_create(self, name: str) -> None:
        """CREATE (RFC 3501 §6.3.3), subscribed so that every client shows it (§6.3.6)."""
        self._names = None
        self.client.create_folder(name)
        self.client.subscribe_folder(name)

    def folder_rename(self, name: str, new_name: str) -> None:
        """RENAME (RFC 3501 §6.3.5); the subscription follows the new name."""
        self._names = self._selected = None
        self.client.rename_folder(name, new_name)
        with suppress(IMAPClientError):
            self.client.unsubscribe_folder(name)
        self.client.subscribe_folder(new_name)

    def folder_total(self, name: str) -> int:
        return int(self.client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"])

    def folder_delete(self, name: str) -> None:
        """DELETE (RFC 3501 §6.3.4); the caller checked that it is empty."""
        self._names = self._selected = None
        with suppress(IMAPClientError):
            self.client.unsubscribe_folder(name)
        self.client.delete_folder(name)

    def with_message_ids(self, folder: str, message_ids: Sequence[str]) -> list[int]:
        """The UIDs of ``folder`` whose Message-ID is one of ``message_ids`` (exact header
        search, each id a literal)."""
        if not message_ids:
            return []
        self.select(folder)
        found: set[int] = set()
        for start in range(0, len(message_ids), 20):  # short command lines
            found.update(self._search(_any_message_id(message_ids[start : start + 20])))
        return sorted(found)

    # -- one message -----------------------------------------------------------------------

    def fetch(
        self, folder: str, uid: int, *, mark_seen: bool = True
    ) -> tuple[bytes, Summary] | None:
        """The raw message and its summary, or None when the UID does not exist. ``mark_seen``:
        the message becomes read (\\Seen)."""
        if not 0 < uid < 2**32:  # RFC 3501 §2.3.1.1: nz-number, 32 bits
            return None
        self.select(folder, readonly=not mark_seen)
        # BODY[] sets \Seen itself in a folder opened with SELECT (RFC 3501 §6.4.5), in the
        # same command; BODY.PEEK[] in one opened with EXAMINE changes nothing.
        body = "BODY[]" if mark_seen else "BODY.PEEK[]"
        data = self.client.fetch([uid], [body, "ENVELOPE", "FLAGS", "RFC822.SIZE", "BODYSTRUCTURE"])
        if uid not in data:
            return None
        self._numbers[uid] = int(data[uid][b"SEQ"])
        return data[uid][b"BODY[]"], _summary(uid, data[uid])

    # -- changes ---------------------------------------------------------------------------

    def _existing(self, folder: str, uids: Sequence[int]) -> list[int]:
        uids = [u for u in uids if 0 < u < 2**32]
        self.select(folder)
        if not uids:
            return []
        return [int(u) for u in self.client.search(["UID", ",".join(map(str, uids))])]

    def existing(self, folder: str, uids: Sequence[int]) -> list[int]:
        """The UIDs of ``uids`` that name a message of ``folder``."""
        return self._existing(folder, uids)

    def set_flag(self, folder: str, uids: Sequence[int], flag: bytes, on: bool) -> list[int]:
        found = self._existing(folder, uids)
        if found:
            if on:
                self.client.add_flags(found, [flag], silent=True)
            else:
                self.client.remove_flags(found, [flag], silent=True)
        return found

    def move(self, folder: str, uids: Sequence[int], target: str) -> list[int]:
        found = self._existing(folder, uids)
        if found:
            self.client.move(found, target)  # RFC 6851
        return found

    def delete(self, folder: str, uids: Sequence[int]) -> list[int]:
        """To Trash; from Trash, for good."""
        if folder != TRASH:
            return self.move(folder, uids, TRASH)
        found = self._existing(folder, uids)
        if found:
            self.client.add_flags(found, [b"\\Deleted"], silent=True)
            self.client.uid_expunge(found)  # RFC 4315: only these messages
        return found

    def search_header(self, folder: str, name: str, value: str) -> list[int]:
        """UIDs of ``folder`` with a ``name`` field containing ``value`` (sent as literals with
        CHARSET UTF-8, so a UTF-8 header, RFC 6532, is found too)."""
        self.select(folder)
        keys = [b"HEADER", _literal(name.encode("utf-8")), _literal(value.encode("utf-8"))]
        return sorted(self._search(keys))

    def purge(self, folder: str, uids: Sequence[int]) -> list[int]:
        """Remove for good, whatever the folder (a draft replaced by its newer copy)."""
        found = self._existing(folder, uids)
        if found:
            self.client.add_flags(found, [b"\\Deleted"], silent=True)
            self.client.uid_expunge(found)
        return found

    def empty_trash(self) -> int:
        self.select(TRASH)
        uids = self.client.search(["ALL"])
        if uids:
            self.client.add_flags(uids, [b"\\Deleted"], silent=True)
            self.client.uid_expunge(uids)
        return len(uids)

    def message_ids(self, folder: str, uids: Sequence[int]) -> dict[int, str]:
        """The Message-ID of each existing UID of ``folder`` (a UID without one is left out),
        read with BODY.PEEK so that nothing is marked read (RFC 3501 §6.4.5)."""
        uids = [u for u in uids if 0 < u < 2**32]
        if not uids:
            return {}
        self.select(folder, readonly=True)
        found: dict[int, str] = {}
        for uid, data in self.client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).items():
            block = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
            # Unfold (RFC 5322 §2.2.3), then keep the first Message-ID field, decoded like
            # mime.parse_message does so that both spellings of an id compare equal.
            unfolded = block.replace(b"\r\n", b"\n").replace(b"\n ", b" ").replace(b"\n\t", b" ")
            for line in unfolded.split(b"\n"):
                name, colon, value = line.partition(b":")
                if colon and name.strip().lower() == b"message-id" and value.strip():
                    found[int(uid)] = decode_text(value)[:500]
                    break
        return found

    def subjects(self, message_ids: Iterable[str]) -> dict[str, str]:
        """The subject of the messages of this BAL with these Message-IDs, by Message-ID as
        written in the trace, whatever their folder (the journal's detail column, for people
        who may read the BAL). Read-only: SEARCH then BODY.PEEK (RFC 3501 §6.4.4-5)."""
        wanted = {_id_key(m): m for m in message_ids if _id_key(m)}
        found: dict[str, str] = {}
        for name in [f.name for f in self.folders()]:
            missing = [k for k in wanted if wanted[k] not in found]
            if not missing:
                break
            self.select(name, readonly=True)
            for start in range(0, len(missing), 20):  # short command lines
                chunk = missing[start : start + 20]
                criteria: list[Any] = ["HEADER", "Message-ID", chunk[0]]
                for key in chunk[1:]:
                    criteria = ["OR", ["HEADER", "Message-ID", key], criteria]
                uids = self.client.search(criteria)
                if not uids:
                    continue
                fields = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]"
                for data in self.client.fetch(uids, [fields]).values():
                    block = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
                    headers = BytesHeaderParser(policy=compat32).parsebytes(block or b"")
                    key = _id_key(decode_text(headers.get("Message-ID")))
                    if key in wanted and wanted[key] not in found:
                        found[wanted[key]] = decode_text(headers.get("Subject"))[:MAX_SUBJECT]
        return found

    # -- export ----------------------------------------------------------------------------

    def folder_uids(self, folder: str) -> tuple[int, list[int]]:
        """UIDVALIDITY and every UID of ``folder``, ascending (RFC 3501 §2.3.1.1)."""
        self._selected, self._numbers = None, {}
        selected = self.client.select_folder(folder, readonly=True)
        self._exists = int(selected.get(b"EXISTS", 0))
        self._selected = (folder, True)
        return int(selected[b"UIDVALIDITY"]), sorted(int(u) for u in self.client.search(["ALL"]))

    def raw_messages(
        self, folder: str, uids: Sequence[int], *, batch_bytes: int = 8 * 2**20
    ) -> Iterator[tuple[int, bytes, tuple[bytes, ...], datetime | None]]:
        """(uid, raw bytes, flags, internal date) of each of ``uids``, in batches of about
        ``batch_bytes`` so that a large BAL never sits in memory. Read-only (BODY.PEEK keeps
        \\Seen as it was); a UID expunged meanwhile is skipped."""
        self.select(folder, readonly=True)
        for start in range(0, len(uids), 500):  # short command lines (imap_max_line_length)
            window = list(uids[start : start + 500])
            sizes = self.client.fetch(window, ["RFC822.SIZE"])
            batch: list[int] = []
            total = 0
            for uid in [*window, 0]:
                size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0)) if uid else 0
                if batch and (not uid or total + size > batch_bytes):
                    data = self.client.fetch(batch, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
                    for got in batch:
                        if got in data:
                            item = data[got]
                            flags = tuple(item.get(b"FLAGS", ()))
                            yield got, item[b"BODY[]"], flags, item.get(b"INTERNALDATE")
                    batch, total = [], 0
                if uid in sizes:
                    batch.append(uid)
                    total += size


def _flatten(tree: Any) -> list[int]:
    """The UIDs of one THREAD answer's tree, depth first (RFC 5256 §4: a parenthesised list
    is a branch; its first element is the parent of the rest)."""
    if isinstance(tree, int):
        return [tree]
    result: list[int] = []
    for item in tree if isinstance(tree, tuple | list) else ():
        result += _flatten(item)
    return result


def _comparable(when: datetime | None) -> datetime:
    """An INTERNALDATE to sort with others, naive or not (imapclient keeps the offset)."""
    if when is None:
        return datetime.min
    return when.replace(tzinfo=None) - (when.utcoffset() or timedelta(0))


def _id_key(message_id: str) -> str:
    """A Message-ID without brackets and whitespace (RFC 5322 §3.6.4), for comparisons."""
    return "".join(message_id.split()).removeprefix("<").removesuffix(">")


@contextmanager
def open_store(address: str) -> Iterator[MailStore]:
    with MailStore(address) as store:
        yield store


def inboxes_holding(addresses: Iterable[str], *, sender: str, content: bytes) -> set[str]:
    """The BALs among ``addresses`` whose INBOX holds this very message: ``content`` delivered
    from the envelope sender ``sender``. Asked only after an attempt that may have stored it
    before being cut short (gateway or relay worker killed, Dovecot died before answering).

    Found by the Message-ID of ``content``'s header (whole), then each namesake compared with
    it: another message that reuses the id, or the same text from another sender, is not a
    copy of this one (issue 15). Empty for a message without a Message-ID: nothing finds its
    copy. A BAL that cannot be searched now is left out: delivering again risks a duplicate,
    never a loss."""
    message_id = message_id_of(content)
    if not message_id:
        return set()
    text = lmtp.as_delivered(content)
    return_path = b"Return-Path: <" + sender.encode("utf-8", "surrogateescape") + b">\r\n"
    found = set()
    for address in sorted(set(addresses)):
        try:
            with MailStore(address) as store:
                namesakes = store.search_header("INBOX", "Message-ID", message_id)
                if namesakes and any(
                    _is_copy(stored, return_path, text)
                    for _uid, stored, _flags, _date in store.raw_messages("INBOX", namesakes)
                ):
                    found.add(address)
        except (StoreUnavailable, ControlCharacters):
            continue  # a Message-ID with a line break cannot be searched, so cannot be found
    return found


TRACE_FIELDS = frozenset({b"return-path", b"delivered-to", b"received"})


def _is_copy(stored: bytes, return_path: bytes, text: bytes) -> bool:
    """Whether ``stored`` (a message as IMAP gives it) is ``text`` delivered with this
    Return-Path: Dovecot's Return-Path first (RFC 5321 §4.4), then only trace fields (Dovecot's
    Delivered-To and Received, the gateway's Received), then exactly ``text``."""
    if len(stored) < len(return_path) + len(text):
        return False
    if not stored.startswith(return_path) or not stored.endswith(text):
        return False
    added = stored[len(return_path) : len(stored) - len(text)]
    if added and not added.endswith(b"\r\n"):
        return False
    for line in added.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            continue  # the folded rest of the field above (RFC 5322 §2.2.3)
        if line.partition(b":")[0].strip().lower() not in TRACE_FIELDS:
            return False
    return True
