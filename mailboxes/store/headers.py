"""Header values as text: shared by the IMAP listing and the MIME reader."""

from __future__ import annotations

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
