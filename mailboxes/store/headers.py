"""Header values as text: shared by the IMAP listing and the MIME reader."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import Header, decode_header, make_header


@dataclass(frozen=True)
class Address:
    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


def _bytes_text(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if candidate and candidate != "unknown-8bit":
            try:
                return data.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("cp1252", "replace")


def decode_text(value: bytes | str | Header | None) -> str:
    """An RFC 2047 header value as text; undecodable bytes are replaced, never fatal."""
    if value is None:
        return ""
    if isinstance(value, Header):  # compat32 gives these for 8-bit header bytes
        try:
            parts = decode_header(value)
        except (UnicodeError, LookupError, ValueError, TypeError):
            return str(value).strip()
        return "".join(
            _bytes_text(chunk, charset) if isinstance(chunk, bytes) else chunk
            for chunk, charset in parts
        ).strip()
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
    try:
        return str(make_header(decode_header(raw))).strip()
    except (UnicodeError, LookupError, ValueError, AssertionError, TypeError):
        return raw.strip()


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
