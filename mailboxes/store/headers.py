"""Header values as text: shared by the IMAP listing and the MIME reader; and the one way the
messages we build get their headers (``header_set``).

Headers come from any peer and are often broken. Decoding never raises: a value that cannot be
decoded is shown as it came (templates escape it), and the text returned can go anywhere a
page puts it, a response header included (no control character, no lone surrogate).
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.errors import MessageError
from email.header import Header, decode_header, make_header
from email.headerregistry import Address as MailAddress
from email.message import Message
from typing import Any

# RFC 5322 §2.2.3: unfolding removes a CRLF followed by white space.
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# A date shown in any time zone (offsets stay within a day) without leaving datetime's range.
_EARLIEST = datetime.min + timedelta(days=2)
_LATEST = datetime.max - timedelta(days=2)


@dataclass(frozen=True)
class Address:
    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD: a broken UTF-7 or UTF-16 sequence
    decodes to one, and a page holding it cannot be encoded for the response."""
    return _SURROGATES.sub("\ufffd", text)


def printable(text: str) -> str:
    """One line of text: unfolded, each run of control characters (a CR/LF an encoded word
    carried, NUL, ESC...) made one space, lone surrogates replaced."""
    return well_formed(_CONTROLS.sub(" ", _FOLD.sub("", text)))


def header_date(value: object) -> datetime | None:
    """A header's date if it can be shown in any time zone, else None (« inconnue »): a Date of
    31 Dec 9999 -1200 overflows when converted to local time, and the zone imapclient builds
    from « +9999 » raises when asked its offset (RFC 5322 §3.3 allows ±9959 only)."""
    if not isinstance(value, datetime):
        return None
    try:
        value.utcoffset()
    except ValueError:
        return None
    return value if _EARLIEST <= value.replace(tzinfo=None) <= _LATEST else None


def _bytes_text(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if candidate and candidate != "unknown-8bit":
            try:
                return data.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("cp1252", "replace")


# What the standard library raises on a malformed encoded word (RFC 2047): HeaderParseError
# (a MessageError) for bad base64, LookupError for an unknown charset, UnicodeError...
_UNDECODABLE = (MessageError, UnicodeError, LookupError, ValueError, AssertionError, TypeError)


def _decoded(value: bytes | str | Header) -> str:
    if isinstance(value, Header):  # compat32 gives these for 8-bit header bytes
        try:
            return "".join(
                _bytes_text(chunk, charset) if isinstance(chunk, bytes) else chunk
                for chunk, charset in decode_header(value)
            )
        except _UNDECODABLE:
            return ""  # compat32 built it from bytes it could read: not seen in practice
    if isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value):
        # 8-bit bytes parsed with surrogateescape (RFC 6532 UTF-8 headers, or legacy garbage)
        value = value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes):
        try:
            raw = value.decode("utf-8")
        except UnicodeDecodeError:
            raw = value.decode("cp1252", "replace")
    else:
        raw = value
    if raw.isascii() and "=?" not in raw:
        return raw  # no encoded word (RFC 2047 §2): nothing to decode (most list rows)
    try:
        return str(make_header(decode_header(raw)))
    except _UNDECODABLE:
        return raw  # shown as it came: the template escapes it


def decode_text(value: bytes | str | Header | None) -> str:
    """An RFC 2047 header value as one line of text (``printable``); never raises: what
    cannot be decoded is returned raw, undecodable bytes are replaced."""
    if value is None:
        return ""
    return printable(_decoded(value)).strip()


HEADER_END = re.compile(rb"\r?\n\r?\n")
MESSAGE_ID_FIELD = re.compile(
    rb"^Message-ID[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE
)
FOLD = re.compile(rb"\r?\n(?=[ \t])")


def header_section(raw: bytes) -> bytes:
    """The header section of a message (RFC 5322 §2.1): what comes before the first empty
    line; the whole message when it has no body, nothing when it starts with the empty line."""
    if raw[:1] == b"\n" or raw[:2] == b"\r\n":
        return b""
    end = HEADER_END.search(raw)
    return raw[: end.start()] if end else raw


def message_id_of(raw: bytes) -> str:
    """The Message-ID of a message (RFC 5322 §3.6.4), unfolded and whole, from its own header
    section only: a Message-ID line in the body, a quoted message or a forwarded part
    (message/rfc822) names another message. "" when the header has none."""
    found = MESSAGE_ID_FIELD.search(header_section(raw))
    if found is None:
        return ""
    value = FOLD.sub(b"", found.group(1)).strip()
    return value.decode("utf-8", "replace").replace("\x00", "")  # PostgreSQL text holds no NUL


# What would end a header line, for a reader or for Python's own parser (str.splitlines), and the
# other control characters: none belongs in a header we write.
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_DECODER = email.policy.SMTP
_MAX_DECODES = 16
# Header values the policy parses as address lists: their text is addresses we checked, and
# decoding it as a whole could change who they name; only display names are free text.
_ADDRESS_HEADERS = frozenset(
    {"from", "sender", "reply-to", "to", "cc", "bcc", "disposition-notification-to"}
)
_LINES = re.compile(r"\r\n|\r|\n")


class HeaderRefused(ValueError):
    """A header that would not be exactly one header line; never written."""


def header_text(value: str) -> str:
    """``value`` as the text a header may carry. The email policy decodes RFC 2047 encoded words
    in what it is given (even in a display name), and some CPython 3.11 releases write the
    decoded text out raw: a word that decodes to CR LF would start a header of its own. So the
    text is decoded the way the policy decodes it, again until nothing changes (a word may
    encode another), and every line break or control character becomes a space."""
    text = _BREAKS.sub(" ", value)
    for _ in range(_MAX_DECODES):
        try:
            decoded = _BREAKS.sub(" ", str(_DECODER.header_factory("subject", text)))
        except (ValueError, LookupError, UnicodeError, IndexError, TypeError):
            break
        if decoded == text:
            return text
        text = decoded
    # Not stable, or not decodable: leave the policy nothing to decode.
    return text.replace("=?", "= ?")


def header_set(message: Message[Any, Any], name: str, value: str | MailAddress) -> None:
    """Write one header of a message we build. Free text (the value, or a display name) goes
    through ``header_text``; the result must fold to exactly one header line in the message's
    policy, whatever the interpreter's patch level, or HeaderRefused is raised and nothing is
    written (RFC 5322 §2.2: a header field is one line, folded only before white space)."""
    if isinstance(value, MailAddress):
        value = MailAddress(
            display_name=header_text(value.display_name),
            username=value.username,
            domain=value.domain,
        )
    elif name.lower() not in _ADDRESS_HEADERS:
        value = header_text(value)
    try:
        message[name] = value
    except ValueError as exc:  # the policy's own refusal (CR or LF in an address, say)
        raise HeaderRefused(f"{name}: {exc}") from exc
    stored = message.get_all(name) or []
    lines = _LINES.split(message.policy.fold(name, stored[-1]).rstrip("\r\n")) if stored else []
    if (
        not lines
        or not lines[0].lower().startswith(name.lower() + ":")
        or any(line[:1] not in (" ", "\t") for line in lines[1:])
    ):
        _drop_last(message, name)
        raise HeaderRefused(f"{name} would not be a single header line")


def _drop_last(message: Message[Any, Any], name: str) -> None:
    values = message.get_all(name) or []
    del message[name]
    for kept in values[:-1]:
        message[name] = kept
