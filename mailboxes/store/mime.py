"""Reading a raw message for display: headers, text, HTML and attachments.

Mail from outside is untrusted and often broken (bad MIME, unknown charsets, missing or huge
headers, nested message/rfc822, 8-bit garbage). Everything here degrades to "shown as well as
it can be" and never raises on content.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from mailboxes.store.headers import Address, decode_text, header_date, well_formed

MAX_HEADER_CHARS = 2000  # a subject or address list longer than this is cut for display
MAX_BODY_CHARS = 2_000_000


@dataclass(frozen=True)
class Attachment:
    index: int  # position among the walked parts, stable for one message
    filename: str
    content_type: str
    size: int


@dataclass
class Parsed:
    subject: str
    sender: list[Address]
    to: list[Address]
    cc: list[Address]
    date: datetime | None
    message_id: str
    text: str = ""
    html: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    references: str = ""
    patient_closed: bool = False  # X-MSS-MES: FIN (Référentiel #2 ECO.2.2.8)
    wants_mdn: str = ""  # Disposition-Notification-To (RFC 8098)
    written_by: list[Address] = field(default_factory=list)  # Sender (RFC 5322 §3.6.2)
    mss_codecda: str = ""  # X-MSS-CODECDA (Référentiel #2 ECO.2.4.1)
    mss_ins: str = ""  # X-MSS-INS (Référentiel #2 ECO.2.4.2)
    # The parsed MIME tree, kept so that a reader of some attachments (the health documents
    # panel) takes their content from it instead of parsing the message a second time.
    source: Message | None = field(default=None, repr=False, compare=False)


# Référentiel #2 ECO.2.1.3: « XDM/1.0/DDM+<libellé> <NOM> ... » names a mail carrying health
# documents; mail clients hide the prefix (REM SC.MSS/UX.28), after any « Re: » or « TR: ».
_XDM_PREFIX = re.compile(r"^((?:\s*(?:re|tr|fwd?|aw|wg)\s*:)*\s*)XDM/1\.0/DDM\+", re.IGNORECASE)


def display_subject(subject: str) -> str:
    """The subject as shown in lists and pages: without the XDM routing prefix."""
    return _XDM_PREFIX.sub(r"\1", subject, count=1)


def _parse(raw: bytes) -> Message:
    # compat32 never raises on malformed headers; we decode values ourselves.
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _header(msg: Message, name: str) -> str:
    values = msg.get_all(name) or []
    value = decode_text(values[0]) if values else ""
    return value[:MAX_HEADER_CHARS]


def _addresses(msg: Message, name: str) -> list[Address]:
    raw = [decode_text(v) for v in (msg.get_all(name) or [])]
    result = []
    for display, addr in getaddresses(raw)[:200]:
        if addr or display:
            result.append(Address(name=display[:200], email=addr[:320]))
    return result


def _date(msg: Message) -> datetime | None:
    value = msg.get("Date")
    if not value:
        return None
    try:
        return header_date(parsedate_to_datetime(str(value)))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _decode(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset()
    if charset:
        try:
            # A broken UTF-7 or UTF-16 body decodes to lone surrogates: replaced.
            return well_formed(payload.decode(charset, "replace")[:MAX_BODY_CHARS])
        except LookupError:
            pass  # unknown charset name: guess as for an undeclared one
    try:  # undeclared (RFC 2045 says US-ASCII; real senders mean UTF-8 or Windows-1252)
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = payload.decode("cp1252", "replace")
    return text[:MAX_BODY_CHARS]


def _filename(part: Message) -> str:
    """The attachment's base name: a sender may write a path (``../../x``, ``C:\\x``); control
    characters are gone already (decode_text), and « . » or « .. » is no name."""
    try:
        name = part.get_filename()
    except (TypeError, ValueError, LookupError):
        name = None
    base = decode_text(name).replace("\\", "/").rsplit("/", 1)[-1].strip() if name else ""
    return "" if base in (".", "..") else base[:255]


def iter_parts(msg: Message) -> list[Message]:
    """Every leaf part, in order; a nested message/rfc822 counts as one part (an attachment)."""
    leaves: list[Message] = []

    def walk(part: Message, depth: int) -> None:
        if depth > 30:  # a pathological nesting is cut rather than followed
            return
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            for sub in part.get_payload() or []:
                if isinstance(sub, Message):
                    walk(sub, depth + 1)
            return
        leaves.append(part)

    walk(msg, 0)
    return leaves


def _size(part: Message) -> int:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return len(inner[0].as_bytes())
        return len(str(inner))
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def parse_message(raw: bytes) -> Parsed:
    return _parsed(_parse(raw))


def _parsed(msg: Message) -> Parsed:
    parsed = Parsed(
        subject=_header(msg, "Subject"),
        sender=_addresses(msg, "From"),
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        date=_date(msg),
        message_id=_header(msg, "Message-ID")[:500],
        reply_to=_addresses(msg, "Reply-To"),
        references=" ".join(_header(msg, "References").split())[:4000],
        patient_closed=_header(msg, "X-MSS-MES").strip().upper() == "FIN",
        wants_mdn=_header(msg, "Disposition-Notification-To")[:320],
        written_by=_addresses(msg, "Sender")[:1],
        mss_codecda=_header(msg, "X-MSS-CODECDA")[:500],
        mss_ins=_header(msg, "X-MSS-INS")[:10],
        source=msg,
    )
    for index, part in enumerate(iter_parts(msg)):
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        is_body = (
            disposition != "attachment" and not filename and ctype in ("text/plain", "text/html")
        )
        if is_body and ctype == "text/plain" and not parsed.text:
            parsed.text = _decode(part)
        elif is_body and ctype == "text/html" and not parsed.html:
            parsed.html = _decode(part)
        elif ctype.startswith("multipart/"):
            continue  # an empty or broken multipart: nothing to show
        else:
            if ctype == "message/rfc822" and not filename:
                inner = part.get_payload()
                subject = ""
                if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                    subject = _header(inner[0], "Subject")
                # The subject names the file: a « / » in it is not a path.
                filename = f"{subject or 'message'}.eml".replace("/", "-").replace("\\", "-")
            parsed.attachments.append(
                Attachment(
                    index=index,
                    filename=filename or f"piece-jointe-{index}",
                    content_type=ctype,
                    size=_size(part),
                )
            )
    return parsed


def attachments_where(
    raw: bytes, wanted: Callable[[str], bool]
) -> tuple[Parsed, list[tuple[Attachment, bytes]]]:
    """The message, and the decoded content of the attachments whose file name ``wanted``
    accepts, from one parse of ``raw`` (a large message costs one MIME parse, not one per
    attachment)."""
    parsed = parse_message(raw)
    return parsed, attachment_payloads(parsed, wanted)


def attachment_payloads(
    parsed: Parsed, wanted: Callable[[str], bool]
) -> list[tuple[Attachment, bytes]]:
    """The decoded content of the attachments of an already parsed message whose file name
    ``wanted`` accepts (no second MIME parse: a 7 MB message costs about half a second to
    parse here)."""
    if parsed.source is None:
        return []
    parts = iter_parts(parsed.source)
    found = []
    for attachment in parsed.attachments:
        part = parts[attachment.index]
        if wanted(attachment.filename) and part.get_content_maintype() != "message":
            found.append((attachment, _payload(part)))
    return found


def _payload(part: Message) -> bytes:
    """The decoded content of a leaf part. Base64 (RFC 2045 §6.8) is decoded by binascii in
    one pass, line breaks skipped, rather than by the email package, which splits and joins
    the lines first (a third of the time on a 7 MB archive); anything it refuses (bad padding)
    goes the email package's forgiving way."""
    if part.get("Content-Transfer-Encoding", "").strip().lower() == "base64":
        text = part.get_payload()
        if isinstance(text, str):
            try:
                return binascii.a2b_base64(text.encode("ascii", "surrogateescape"))
            except (binascii.Error, ValueError, UnicodeEncodeError):
                pass
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def attachment_bytes(raw: bytes, index: int) -> tuple[Attachment, bytes] | None:
    """The decoded content of the attachment at ``index`` (as listed by parse_message)."""
    parsed = parse_message(raw)
    wanted = next((a for a in parsed.attachments if a.index == index), None)
    if wanted is None:
        return None
    part = iter_parts(_parse(raw))[index]
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        data = (
            inner[0].as_bytes()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message)
            else b""
        )
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
    return wanted, data
