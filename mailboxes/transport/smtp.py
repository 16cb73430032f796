"""SMTP transactions towards another operator of the trust space (mssante-spec §1.4,
recommended outbound algorithm): find the peer, require STARTTLS with TLS >= 1.2, present our
certificate, check the peer certificate's DN against the whitelist entry of each recipient's
domain, keep the DSN parameters (RFC 3461), and report each recipient's outcome.

No fallback to the public internet: a domain outside the whitelist is a permanent failure.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from django.conf import settings

from annuaire.whitelist import dn_key
from mailboxes.transport import crl


@dataclass(frozen=True)
class Result:
    """Outcome for one recipient. ``kind``: relayed | temporary | permanent."""

    kind: str
    status: str  # RFC 3463 enhanced code
    reply: str  # what the peer said (or why we did not try), for the DSN and the webmail
    remote_mta: str = ""


@dataclass(frozen=True)
class Rcpt:
    address: str
    notify: str = ""
    orcpt: str = ""


class RouteError(Exception):
    def __init__(self, permanent: bool, status: str, reply: str) -> None:
        super().__init__(reply)
        self.permanent = permanent
        self.status = status
        self.reply = reply


def _enhanced(code: int, text: str, default_class: str) -> str:
    first = text.split(" ", 1)[0]
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in "245":
        return first
    return default_class if code else "4.4.1"


def _static_route(domain: str) -> list[tuple[str, int]] | None:
    table: dict[str, tuple[str, int]] = {}
    for item in settings.RELAY_ROUTES:
        name, _, target = item.partition("=")
        host, _, port = target.rpartition(":")
        if name and host and port.isdigit():
            table[name.strip().lower()] = (host.strip("[]"), int(port))
    route = table.get(domain) or table.get("*")
    return [route] if route else None


def routes(domain: str) -> list[tuple[str, int]]:
    """The peers to try, best first: the route table, else DNS MX (RFC 5321 §5.1, with the
    implicit MX when a domain has none)."""
    static = _static_route(domain)
    if static is not None:
        return static
    # Imported here: the gateway imports this module (through the relay's spool) and never
    # resolves MX; dnspython costs a process ~4 MB of memory.
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(domain, "MX", lifetime=10)
    except dns.resolver.NXDOMAIN as exc:
        raise RouteError(True, "5.1.2", f"Domain {domain} does not exist") from exc
    except dns.resolver.NoAnswer:
        return [(domain, 25)]
    except dns.exception.DNSException as exc:
        raise RouteError(False, "4.4.3", f"DNS lookup for {domain} failed: {exc}") from exc
    records = sorted(answer, key=lambda r: r.preference)
    hosts = [str(r.exchange).rstrip(".") for r in records]
    if hosts == [""]:  # RFC 7505 null MX: the domain accepts no mail
        raise RouteError(True, "5.1.10", f"Domain {domain} accepts no mail (null MX)")
    return [(h, 25) for h in hosts]


@lru_cache(maxsize=8)
def _client_context(
    cert: str, key: str, ca_bundle: str, crl_file: str, crl_stamp: crl.Stamp | None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_bundle)
    # The peer is authenticated by its chain (IGC-Santé) and by its DN being listed for the
    # recipient's domain in the whitelist, not by the MX host name (§1.4 step 3).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # §1.5
    context.set_ciphers(settings.TLS_CIPHERS)  # the gateway's policy, both ways
    context.load_cert_chain(cert, key)
    # Référentiel #2 ECO.1.1.5/ECO.1.1.6: the peer's server certificate must not be revoked.
    # A revoked (or, CRL expired, any) peer fails the handshake: a temporary failure, the
    # message stays queued (mailboxes/transport/crl.py).
    crl.load_into(context, crl_file)
    return context


def client_context() -> ssl.SSLContext:
    """Our client context; a new one as soon as the CRL file in force is replaced (its stamp
    is part of the cache key: one stat per new connection)."""
    crl_file = settings.TLS_CRL_FILE
    return _client_context(
        settings.RELAY_CERT,
        settings.RELAY_KEY,
        settings.RELAY_CA_BUNDLE,
        crl_file,
        crl.file_stamp(crl_file),
    )


def _all(rcpts: list[Rcpt], result: Result) -> dict[str, Result]:
    return {r.address: result for r in rcpts}


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class Envelope:
    """One message for the peers of a route: recipients of one or more domains that share it."""

    mail_from: str
    rcpts: list[Rcpt]
    content: bytes
    ret: str = ""
    envid: str = ""


Route = tuple[tuple[str, int], ...]


def route(domain: str, allowed: frozenset[str]) -> Route | Result:
    """The peers to try for ``domain``, or the outcome of all its recipients when there is no
    one to try: outside the trust space (``allowed``, the DN keys the whitelist lists for the
    domain, is empty; no fallback to the public internet) or no usable MX."""
    if not allowed:
        return Result(
            "permanent",
            "5.7.1",
            f"{domain} is not in the MSSante trust space (hors espace de confiance MSSanté)",
        )
    try:
        return tuple(routes(domain))
    except RouteError as exc:
        return Result("permanent" if exc.permanent else "temporary", exc.status, exc.reply)


NOT_ATTEMPTED = "Not attempted: the batch ran out of time, next attempt soon"


def deliver(
    peers: Route,
    allowed: dict[str, frozenset[str]],
    envelopes: list[Envelope],
    *,
    deadline: float | None = None,
) -> list[dict[str, Result]]:
    """Deliver ``envelopes`` one after the other to ``peers`` (best first), whose recipients are
    in the domains of ``allowed`` (domain -> the DN keys listed for it, read by the caller), all
    routed to ``peers``. Like Postfix, the domains of one message served by the same peers share
    one transaction; the peer's certificate is checked against each domain's entry. One outcome
    per address, per envelope. No transaction starts after ``deadline`` (time.monotonic()):
    the envelopes left get a temporary NOT_ATTEMPTED (the relay's claim on their rows must
    not expire while they are being sent). No database here: runs in any thread."""
    dead: dict[tuple[str, int], Result] = {}  # peers that could not be reached, for this call
    results = []
    for envelope in envelopes:
        if deadline is not None and time.monotonic() > deadline:
            results.append(_all(envelope.rcpts, Result("temporary", "4.3.0", NOT_ATTEMPTED)))
        else:
            results.append(_deliver_one(peers, allowed, envelope, dead))
    return results


def _deliver_one(
    peers: Route,
    allowed: dict[str, frozenset[str]],
    envelope: Envelope,
    dead: dict[tuple[str, int], Result],
) -> dict[str, Result]:
    domains = ", ".join(sorted({_domain(r.address) for r in envelope.rcpts}))
    last = Result("temporary", "4.4.1", f"No answer from any mail server of {domains}")
    for host, port in peers:
        if (host, port) in dead:
            last = dead[(host, port)]
            continue
        try:
            conn = _connect(host, port)
        except _NoStartTLS:
            return _all(
                envelope.rcpts,
                Result("temporary", "4.7.10", f"{host} does not offer STARTTLS", host),
            )
        except (OSError, smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected) as exc:
            # Includes TLS failures (ssl.SSLError is an OSError): try the next MX, then defer;
            # the next messages of this call do not wait for this peer again.
            last = dead[(host, port)] = Result("temporary", "4.4.1", f"{host}: {exc}"[:400], host)
            continue
        try:
            return _session(conn, host, port, allowed, envelope)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            last = Result("temporary", "4.4.1", f"{host}: {exc}"[:400], host)
    return _all(envelope.rcpts, last)


def _key(subject: x509.Name | None) -> str | None:
    if subject is None:
        return None
    try:
        return dn_key(subject)
    except ValueError:
        return None


# --- Connection reuse ---------------------------------------------------------------------------
# Like Postfix's connection cache: a verified TLS session to a peer serves the next messages of
# the same worker (RSET in between), for a few seconds of idleness, a few minutes and a hundred
# transactions at most. The peer's DN is checked against the whitelist for every domain, every
# time, on the certificate it presented. One pool per thread (a Celery process runs one task at
# a time; the gateway's threads each have theirs).
REUSE_IDLE_SECONDS = 5.0
REUSE_MAX_AGE_SECONDS = 300.0
REUSE_MAX_TRANSACTIONS = 100
MAX_RCPTS = 100  # per transaction: RFC 5321 §4.5.3.1.8, what every server must accept
_local = threading.local()


@dataclass
class _Connection:
    smtp: smtplib.SMTP
    subject: x509.Name | None
    key: str | None  # the subject's dn_key, compared with each domain's whitelist entry
    opened: float
    used: float
    transactions: int = 0


class _NoStartTLS(Exception):
    pass


def _pool() -> dict[tuple[str, int], _Connection]:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    return pool


def _close(conn: _Connection) -> None:
    try:
        conn.smtp.quit()
    except (smtplib.SMTPException, OSError):
        conn.smtp.close()


def connections_close() -> None:
    """Close this thread's idle sessions (end of a worker, tests)."""
    pool = _pool()
    while pool:
        _close(pool.popitem()[1])


def _reusable(host: str, port: int) -> _Connection | None:
    pool, now = _pool(), time.monotonic()
    for key, conn in list(pool.items()):  # drop what idled too long, whoever it was for
        if now - conn.used > REUSE_IDLE_SECONDS:
            _close(pool.pop(key))
    if (host, port) not in pool:
        return None
    conn = pool.pop((host, port))
    if now - conn.opened > REUSE_MAX_AGE_SECONDS or conn.transactions >= REUSE_MAX_TRANSACTIONS:
        _close(conn)
        return None
    try:
        code, _text = conn.smtp.rset()
    except (smtplib.SMTPException, OSError):
        conn.smtp.close()
        return None
    if code != 250:
        _close(conn)
        return None
    return conn


def _connect(host: str, port: int) -> _Connection:
    conn = _reusable(host, port)
    if conn is not None:
        return conn
    smtp = smtplib.SMTP(
        host, port, local_hostname=settings.RELAY_HOSTNAME, timeout=settings.RELAY_TIMEOUT_SECONDS
    )
    try:
        smtp.ehlo()
        if not smtp.has_extn("starttls"):  # RFC 3207; TLS is mandatory in the trust space
            raise _NoStartTLS
        smtp.starttls(context=client_context())
        tls = smtp.sock
        peer_der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLSocket) else None
        subject = x509.load_der_x509_certificate(peer_der).subject if peer_der else None
        smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    now = time.monotonic()
    return _Connection(smtp, subject, _key(subject), now, now)


def _session(
    conn: _Connection,
    host: str,
    port: int,
    allowed: dict[str, frozenset[str]],
    envelope: Envelope,
) -> dict[str, Result]:
    outcomes: dict[str, Result] = {}
    listed: list[Rcpt] = []
    for rcpt in envelope.rcpts:  # the DN is checked for every domain, on this session
        domain = _domain(rcpt.address)
        if conn.key is not None and conn.key in allowed.get(domain, ()):
            listed.append(rcpt)
            continue
        dn = conn.subject.rfc4514_string() if conn.subject is not None else "none"
        outcomes[rcpt.address] = Result(
            "temporary",
            "4.7.5",
            f"{host} presented a certificate not listed for {domain} ({dn})"[:400],
            host,
        )
    if not listed:
        _close(conn)
        return outcomes
    try:
        for start in range(0, len(listed), MAX_RCPTS):
            outcomes |= _transaction(
                conn.smtp,
                host,
                envelope.mail_from,
                listed[start : start + MAX_RCPTS],
                envelope.content,
                envelope.ret,
                envelope.envid,
            )
    except BaseException:
        conn.smtp.close()
        raise
    conn.used = time.monotonic()
    conn.transactions += 1
    _pool()[(host, port)] = conn
    return outcomes


def _transaction(
    smtp: smtplib.SMTP,
    host: str,
    mail_from: str,
    rcpts: list[Rcpt],
    content: bytes,
    ret: str,
    envid: str,
) -> dict[str, Result]:
    dsn = smtp.has_extn("dsn")
    options = [f"SIZE={len(content)}"] if smtp.has_extn("size") else []
    if dsn and ret in ("FULL", "HDRS"):  # RFC 3461 §4.3
        options.append(f"RET={ret}")
    if dsn and envid and len(xtext(envid)) <= 100:  # RFC 3461 §4.4: xtext, 100 at most
        options.append(f"ENVID={xtext(envid)}")
    if smtp.has_extn("smtputf8") and not (mail_from + "".join(r.address for r in rcpts)).isascii():
        options.append("SMTPUTF8")
    rcpt_options = []
    for rcpt in rcpts:
        extra = []
        if dsn and _NOTIFY.fullmatch(rcpt.notify):
            extra.append(f"NOTIFY={rcpt.notify}")
        orcpt = _orcpt(rcpt.orcpt)
        if dsn and orcpt:
            extra.append(f"ORCPT={orcpt}")
        rcpt_options.append(extra)
    if smtp.has_extn("pipelining") and "SMTPUTF8" not in options:
        # RFC 2920: MAIL and every RCPT in one write, the replies read in order.
        commands = [_command("mail FROM:", mail_from, options)] + [
            _command("rcpt TO:", r.address, o) for r, o in zip(rcpts, rcpt_options, strict=True)
        ]
        smtp.send("".join(commands))
        (code, text), *rcpt_replies = [smtp.getreply() for _ in commands]
    else:
        code, text = smtp.mail(mail_from or "<>", options)
        rcpt_replies = []
        if code == 250:
            rcpt_replies = [  # smtp.rcpt, without its address parser
                smtp.docmd("rcpt", _command("TO:", r.address, o)[:-2])
                for r, o in zip(rcpts, rcpt_options, strict=True)
            ]
    if code != 250:
        reply = f"{code} {text.decode('utf-8', 'replace')}"
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.rset()  # a broken session is found out when it is next reused
        return _all(rcpts, _result(code, reply, host))
    outcomes: dict[str, Result] = {}
    accepted: list[Rcpt] = []
    for rcpt, (code, text) in zip(rcpts, rcpt_replies, strict=True):
        if code in (250, 251):
            accepted.append(rcpt)
        else:
            reply = f"{code} {text.decode('utf-8', 'replace')}"
            outcomes[rcpt.address] = _result(code, reply, host)
    if not accepted:
        smtp.rset()
        return outcomes
    try:
        code, text = smtp.data(content)
    except smtplib.SMTPDataError as exc:
        error = exc.smtp_error
        code, text = exc.smtp_code, error if isinstance(error, bytes) else error.encode()
    result = _result(code, f"{code} {text.decode('utf-8', 'replace')}", host)
    for rcpt in accepted:
        outcomes[rcpt.address] = result
    return outcomes


# RFC 3461 §4: xtext. Printable ASCII but « + » and « = » as is, every other octet as « +XX ».
_XCHAR = frozenset(chr(c) for c in range(33, 127)) - {"+", "="}
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # an atom (RFC 3461 §4.2)
_NOTIFY = re.compile(r"NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*")  # §4.1


def xtext(value: str) -> str:
    """``value`` as xtext, its UTF-8 octets outside xchar encoded (RFC 3461 §4)."""
    return "".join(c if c in _XCHAR else "".join(f"+{b:02X}" for b in c.encode()) for c in value)


def xtext_decode(value: str) -> str | None:
    """The text an xtext parameter stands for, or None when it is not xtext or not printable
    US-ASCII once decoded (what ORCPT and ENVID must be, RFC 3461 §4.2 and §4.4)."""
    if not _XTEXT.fullmatch(value):
        return None
    text = _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), value)
    return text if all(" " <= c <= "~" for c in text) else None


def orcpt_decode(value: str) -> str:
    """A received ORCPT (``addr-type;xtext``) as we keep it, ``addr-type;address``; "" when
    it is not one."""
    addr_type, sep, address = value.partition(";")
    decoded = xtext_decode(address) if sep and _ADDR_TYPE.fullmatch(addr_type) else None
    return f"{addr_type};{decoded}" if decoded else ""


def _orcpt(kept: str) -> str:
    """The ORCPT parameter for what we keep (``addr-type;address``): the address as xtext
    (RFC 3461 §4.2, 500 characters at most); "" when there is none to send."""
    addr_type, sep, address = kept.partition(";")
    if not sep or not address or not _ADDR_TYPE.fullmatch(addr_type):
        return ""
    encoded = f"{addr_type};{xtext(address)}"
    return encoded if len(encoded) <= 500 else ""


def _quote(address: str) -> str:
    """smtplib.quoteaddr without its RFC 5322 parser for the plain addresses we store."""
    if not address:
        return "<>"
    if address.isascii() and not any(c in address for c in '<>()",;: \\[]'):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _command(verb: str, address: str, options: list[str]) -> str:
    """As smtplib writes it: « mail FROM:<a@b> SIZE=12 »; the null sender is <>."""
    return f"{verb}{_quote(address)}" + "".join(f" {o}" for o in options) + "\r\n"


def _result(code: int, reply: str, host: str) -> Result:
    text = reply.split(" ", 1)[1] if " " in reply else ""
    if 200 <= code < 300:
        return Result("relayed", _enhanced(code, text, "2.0.0"), reply, host)
    if 400 <= code < 500:
        return Result("temporary", _enhanced(code, text, "4.0.0"), reply, host)
    return Result("permanent", _enhanced(code, text, "5.0.0"), reply, host)
