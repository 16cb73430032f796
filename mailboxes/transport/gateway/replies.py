"""What the gateway answers on the wire, as plain functions: the RFC 3463 enhanced code of every
reply (aiosmtpd's own included), and the refusals of what a client wrote wrong in a MAIL or
RCPT command (path syntax, RFC 5321 sizes, RFC 6531 SMTPUTF8, RFC 3461 DSN parameters).

A reply's text is for the sending operator's logs: short, in English, citing the rule.
"""

from __future__ import annotations

import re

# RFC 2034 §3 and RFC 3463 §2: "class.subject.detail", class 2, 4 or 5, after the reply code.
ENHANCED_REPLY = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
# The enhanced code of each bare reply code aiosmtpd writes (RFC 3463 §3); any other code
# gets its class with X.0.0, "other or undefined status" (§3.1).
STATUS = {
    "214": "2.0.0",
    "221": "2.0.0",
    "250": "2.0.0",
    "252": "2.0.0",
    "451": "4.3.0",
    "454": "4.7.0",  # RFC 3207 §4: TLS not available
    "500": "5.5.2",  # syntax error, command unrecognized
    "501": "5.5.4",  # invalid command arguments
    "502": "5.5.1",
    "503": "5.5.1",  # bad sequence of commands
    "504": "5.5.4",
    "530": "5.7.0",  # RFC 3207 §4: must issue a STARTTLS command first
    "552": "5.3.4",  # RFC 1870: message size exceeds fixed maximum
    "555": "5.5.4",  # RFC 5321 §4.1.1.11: parameters not recognized
}


def enhanced(reply: str) -> str:
    """``reply`` with the enhanced code of its reply code when it has none, and without
    aiosmtpd's "Error: " prefix. Unchanged: the greeting (220, RFC 2034 §3) and intermediate
    replies (3xx: RFC 3463 has no class 3)."""
    if ENHANCED_REPLY.match(reply) or reply[:1] not in ("2", "4", "5") or reply[:3] == "220":
        return reply
    code, separator, text = reply[:3], reply[3:4] or " ", reply[4:]
    if text.startswith("Error: "):
        text = text[7:8].upper() + text[8:]
    return f"{code}{separator}{STATUS.get(code, code[0] + '.0.0')} {text}".rstrip()


# RFC 5321 §4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">", then SP before any parameter. Inside
# the brackets no space, bracket or quote but in a Quoted-string; the rest is aiosmtpd's parser.
PATH = re.compile(r'<(?:"(?:[^"\\\r\n]|\\.)*"|[^<>"\s])*>(?=[ \t]|\Z)')


def malformed_path(arg: str, keyword: str) -> bool:
    """True when the path after ``keyword`` ("FROM:", "TO:") is not in angle brackets (a bare
    address, a bracket missing, a space inside); aiosmtpd's parser would take it."""
    if arg[: len(keyword)].upper() != keyword:
        return False  # not a path at all: aiosmtpd's own syntax reply
    return PATH.match(arg[len(keyword) :].lstrip(" ")) is None


UNUSABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def unusable(text: str) -> bool:
    """Control characters (NUL among them) or bytes that are not UTF-8 (aiosmtpd keeps them as
    surrogates): no valid mailbox (RFC 5321 §4.1.2, RFC 6531 §3.3) and nothing PostgreSQL can
    store in a trace, so the transaction would fail after delivery."""
    return UNUSABLE.search(text) is not None


def address_refusal(address: str, *, utf8: bool, sender: bool) -> str | None:
    """The reply refusing the address of a MAIL (``sender``) or RCPT command, or None.
    ``utf8``: the transaction's MAIL carried SMTPUTF8."""
    code, role = ("5.1.7", "sender") if sender else ("5.1.3", "recipient")  # RFC 3463 §3.2
    if unusable(address):
        return f"501 {code} Bad {role} address syntax"
    if address.isascii():
        octets = len(address)
    elif not utf8:
        return f"553 5.6.7 Non-ASCII {role} address needs SMTPUTF8 (RFC 6531 3.5)"
    else:
        octets = len(address.encode())
    if octets <= 64:  # no part can be over its limit: the common case stops here
        return None
    local, _, domain = address.rpartition("@")
    if len(local.encode()) > 64:
        return f"501 {code} Local part too long (RFC 5321 4.5.3.1.1: 64 octets at most)"
    if len(domain.encode()) > 255:
        return f"501 {code} Domain too long (RFC 5321 4.5.3.1.2: 255 octets at most)"
    if octets + 2 > 256:  # the path has its angle brackets
        return f"501 {code} Path too long (RFC 5321 4.5.3.1.3: 256 octets at most)"
    return None


DSN_MAIL = ("RET", "ENVID")  # RFC 3461 §4.3, §4.4
DSN_RCPT = ("NOTIFY", "ORCPT")  # RFC 3461 §4.1, §4.2
NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def split_dsn(arg: str, names: tuple[str, ...]) -> tuple[str, dict[str, str], str | None]:
    """Remove the DSN parameters from a MAIL/RCPT argument; return the rest, their values and
    the reply refusing them (None when they are well formed)."""
    kept, found, refusal = [], {}, None
    for token in arg.split(" "):
        key, sep, value = token.partition("=")
        key = key.upper()
        if sep and key in names:
            if key in found:  # RFC 3461 §4: each parameter at most once
                refusal = f"501 5.5.4 Duplicate {key} parameter (RFC 3461 4)"
            found[key] = value
        else:
            kept.append(token)
    return " ".join(kept), found, refusal or _dsn_refusal(found)


def _dsn_refusal(params: dict[str, str]) -> str | None:
    if any(unusable(value) for value in params.values()):
        return "501 5.5.4 Invalid DSN parameter"  # RFC 3461 §4: xtext
    notify = params.get("NOTIFY")
    if notify is not None:
        values = notify.upper().split(",")
        # RFC 3461 §4.1: "NEVER", or one or more of SUCCESS, FAILURE, DELAY
        if values != ["NEVER"] and not NOTIFY.issuperset(values):
            return "501 5.5.4 Invalid NOTIFY parameter (RFC 3461 4.1)"
    ret = params.get("RET")
    if ret is not None and ret.upper() not in ("FULL", "HDRS"):
        return "501 5.5.4 Invalid RET parameter (RFC 3461 4.3)"
    return None
