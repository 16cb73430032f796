"""Our submission server for mail clients and care software (API LPS, port 587): SMTP with
STARTTLS (SC.MSS/CONF.05, RFC 6409), TLS 1.2 minimum, then SASL XOAUTH2 or OAUTHBEARER
(RFC 7628) with a Pro Santé Connect token (CONF.07), nothing before. The sender must be the BAL
the token opened; each recipient is judged at RCPT like the webmail judges it; DATA goes
through ``sending.message_submit`` into the outbound spool. Replies carry RFC 3463 codes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import ssl
import time
import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from django.conf import settings
from django.db import close_old_connections, connection

from mailboxes.access import Access
from mailboxes.console.services.certificates import fingerprint_of
from mailboxes.errors import MailboxSuspended, RightMissing, StoreUnavailable
from mailboxes.models import Mailbox
from mailboxes.software.psc import PscUnavailable
from mailboxes.software.sending import message_submit
from mailboxes.software.sessions import (
    LoginRefused,
    SoftwareSession,
    certificate_login,
    certificate_still_bound,
    software_login,
)
from mailboxes.store.imap import MailStore
from mailboxes.transport import crl
from mailboxes.webmail.services.compose import (
    MessageTooLarge,
    RecipientsRefused,
    recipients_review,
)
from mssante_portal.errors import PortalError

T = TypeVar("T")
logger = logging.getLogger(__name__)


def now() -> float:
    """The clock the session's expiry is read against (epoch seconds)."""
    return time.time()


def _ascii(text: str) -> str:
    """An SMTP reply is ASCII (RFC 5321 §4.2): the French reason without its accents."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(plain.split())[:300]


def _sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    finally:
        if not connection.settings_dict.get("CONN_MAX_AGE"):
            connection.close()


async def _off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(_sync, fn, *args, **kwargs)


def _xoauth2(blob: bytes) -> tuple[str, str] | None:
    """``user=<login>^Aauth=Bearer <token>^A^A`` (Google's XOAUTH2)."""
    fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if "=" in part)
    token = fields.get("auth", "")
    if not fields.get("user") or not token.startswith("Bearer "):
        return None
    return fields["user"], token[len("Bearer ") :]


def _oauthbearer(blob: bytes) -> tuple[str, str] | None:
    """RFC 7628 §3.1: ``n,a=<login>,^A...auth=Bearer <token>^A^A``."""
    gs2, _, rest = blob.decode().partition("\x01")
    parts = gs2.split(",")
    login = next((p[2:] for p in parts[1:2] if p.startswith("a=")), "")
    login = login.replace("=2C", ",").replace("=3D", "=")  # RFC 5801 §4 saslname
    fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
    token = fields.get("auth", "")
    if not login or not token.startswith("Bearer "):
        return None
    return login, token[len("Bearer ") :]


async def _sasl_response(server: SMTP, args: list[str]) -> bytes | AuthResult:
    """The client's SASL response: the initial one on the AUTH line (``=`` for an empty one,
    RFC 4954 §4) or asked for; an AuthResult to answer at once when there is none or it is
    not base64."""
    if len(args) > 1 and args[1] == "=":
        return b""
    if len(args) > 1:
        try:
            return base64.b64decode(args[1], validate=True)
        except (binascii.Error, ValueError):
            return AuthResult(
                success=False, handled=False, message="501 5.5.2 Cannot decode base64"
            )
    blob = await server.challenge_auth("")
    if blob is MISSING:
        return AuthResult(success=False, handled=True)
    return bytes(blob)


class SubmissionHandler:
    """aiosmtpd hooks. The token is read, checked at PSC and dropped: never stored
    (SC.MSS/CONF.28)."""

    async def _auth(
        self, server: SMTP, args: list[str], parse: Callable[[bytes], tuple[str, str] | None]
    ) -> AuthResult:
        blob = await _sasl_response(server, args)
        if isinstance(blob, AuthResult):
            return blob
        try:
            credentials = parse(blob)
        except (UnicodeDecodeError, ValueError):
            credentials = None
        if credentials is None:
            return AuthResult(
                success=False, handled=False, message="501 5.5.2 Malformed SASL response"
            )
        assert server.session is not None
        remote = str(server.session.peer[0]) if server.session.peer else None
        try:
            session = await _off_loop(
                software_login,
                address=credentials[0],
                token=credentials[1],
                service="submission",
                remote=remote,
            )
        except LoginRefused:
            return AuthResult(
                success=False,
                handled=False,
                message="535 5.7.8 Jeton Pro Sante Connect refuse pour cette BAL",
            )
        except PscUnavailable:
            return AuthResult(
                success=False,
                handled=False,
                message="454 4.7.0 Pro Sante Connect injoignable, reessayez",
            )
        return AuthResult(success=True, auth_data=session)

    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL EXTERNAL (RFC 4422 appendix A): the TLS client certificate a director bound
        to an APP BAL; the optional authorization identity must be that BAL."""
        blob = await _sasl_response(server, args)
        if isinstance(blob, AuthResult):
            return blob
        try:
            authzid = blob.decode()
        except UnicodeDecodeError:
            authzid = "\0"
        assert server.session is not None
        remote = str(server.session.peer[0]) if server.session.peer else None
        der = _peer_certificate(server)
        if der is None or "\0" in authzid:
            return AuthResult(
                success=False,
                handled=False,
                message="535 5.7.8 Aucun certificat client valide presente",
            )
        try:
            session = await _off_loop(
                certificate_login,
                fingerprint=fingerprint_of(der),
                login=authzid,
                service="submission",
                remote=remote,
            )
        except LoginRefused:
            return AuthResult(
                success=False,
                handled=False,
                message="535 5.7.8 Certificat refuse pour cette BAL",
            )
        return AuthResult(success=True, auth_data=session)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._auth(server, args, _xoauth2)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._auth(server, args, _oauthbearer)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        opened = cast(SoftwareSession, session.auth_data)
        mailbox = opened.grant.mailbox
        if now() >= opened.expires:  # SC.MSS/CONF.10: the session ends with its token
            return "421 4.7.0 Jeton Pro Sante Connect expire : reconnectez-vous"
        if opened.certificate is not None and not await _off_loop(
            certificate_still_bound, opened
        ):  # the director unbound it: it opens nothing from the next command on
            return "530 5.7.0 Certificat retire de cette BAL : reconnectez-vous"
        if address.strip().lower() != mailbox.address:
            return f"553 5.7.1 L'expediteur doit etre la BAL ouverte <{mailbox.address}>"
        if not opened.grant.allows(Access.SEND):
            return "550 5.7.1 " + _ascii(
                "Vous pouvez lire cette BAL mais pas écrire en son nom (droit d'envoi)."
            )
        if mailbox.status != Mailbox.Status.ACTIVE:
            return "550 5.2.1 " + _ascii(MailboxSuspended.user_message)
        envelope.mail_from = mailbox.address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= settings.COMPOSE_MAX_RECIPIENTS:
            return "452 4.5.3 Trop de destinataires"  # RFC 5321 §4.5.3.1.10
        verdict = (await _off_loop(recipients_review, [address]))[0]
        if not verdict.ok:
            reason = verdict.reason or "Destinataire refuse."
            return f"550 5.7.1 <{verdict.address}> " + _ascii(reason)
        envelope.rcpt_tos.append(verdict.address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        opened = cast(SoftwareSession, session.auth_data)
        remote = str(session.peer[0]) if session.peer else None
        raw = envelope.original_content or b""
        try:
            spooled = await _off_loop(
                _submit_with_store,
                server,
                session=opened,
                recipients=list(envelope.rcpt_tos),
                raw=raw,
                remote=remote,
            )
        except RecipientsRefused as exc:
            refused = ", ".join(v.address for v in exc.verdicts if not v.ok)
            return f"550 5.7.1 Destinataires refuses : {refused}"
        except MessageTooLarge:
            return "552 5.3.4 Message trop volumineux"
        except RightMissing:
            return "550 5.7.1 Pas de droit d'envoi depuis cette BAL"
        except StoreUnavailable:
            return "451 4.3.0 Stockage indisponible, reessayez"
        except PortalError as exc:
            code = "550 5.7.1" if exc.permanent else "451 4.3.0"
            return f"{code} {_ascii(exc.user_message)}"
        return f"250 2.0.0 Message accepte {spooled.message_id}"


def _peer_certificate(server: SMTP) -> bytes | None:
    """The client's certificate (DER) as the TLS layer verified it (LPS_CLIENT_CA_BUNDLE and
    the CRLs in force), None without one."""
    transport = server.transport
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    return bytes(der) if der else None


def _submit_with_store(server: SMTP, **kwargs: Any) -> Any:
    """``message_submit`` with the SMTP session's own IMAP session on the BAL for the Sent
    copies: opened at its first message, kept for the next ones (an IMAP login per message
    cost as much as the rest of the submission), dropped after any failure so that the next
    message opens a fresh one. Runs off the event loop; a session's commands come one at a
    time, so one thread at a time uses it."""
    session: SoftwareSession = kwargs["session"]
    store = getattr(server, "sent_store", None)
    if store is None:
        store = MailStore(session.grant.mailbox.address).__enter__()
        server.sent_store = store  # type: ignore[attr-defined]
    try:
        return message_submit(store=store, **kwargs)
    except BaseException:
        _close_store(server)
        raise


def _close_store(server: SMTP) -> None:
    store = getattr(server, "sent_store", None)
    server.sent_store = None  # type: ignore[attr-defined]
    if store is not None:
        store.__exit__(None, None, None)


class SubmissionSMTP(SMTP):
    """aiosmtpd's SMTP with what we do not use turned off (STYLE.md, boundaries): no HELP, no
    VRFY, no EXPN; AUTH only after TLS and only XOAUTH2 / OAUTHBEARER / EXTERNAL."""

    sent_store: MailStore | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sent_store is not None:
            # The IMAP logout off the event loop; the SMTP side closes at once.
            asyncio.get_running_loop().run_in_executor(None, _close_store, self)
        super().connection_lost(exc)

    async def smtp_HELP(self, arg: str) -> None:
        await self.push("502 5.5.1 Command not implemented")

    async def smtp_VRFY(self, arg: str) -> None:
        await self.push("502 5.5.1 Command not implemented")

    async def smtp_EXPN(self, arg: str) -> None:
        await self.push("502 5.5.1 Command not implemented")


def tls_context(*, cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """Server TLS for clients: TLS 1.2 minimum, the operator's cipher suites (SC.MSS/CONF.01,
    CONF.03). A client certificate is asked for but not required (mail clients use tokens);
    one that is sent must chain to ``client_ca`` (default LPS_CLIENT_CA_BUNDLE) and not be
    revoked by the CRLs in force (TLS_CRL_FILE), or the handshake fails."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(settings.TLS_CIPHERS)
    bundle = settings.LPS_CLIENT_CA_BUNDLE if client_ca is None else client_ca
    if bundle and os.path.exists(bundle):
        context.load_verify_locations(cafile=bundle)
        context.verify_mode = ssl.CERT_OPTIONAL
        crl.load_into(context, settings.TLS_CRL_FILE)
    return context


def smtp_kwargs(context: ssl.SSLContext) -> dict[str, Any]:
    return {
        "hostname": settings.LPS_SUBMISSION_HOSTNAME,
        "ident": "MSSante submission",
        "tls_context": context,
        "require_starttls": True,  # RFC 3207: nothing but EHLO/STARTTLS/QUIT before TLS
        "auth_required": True,  # RFC 6409 §4.3: MAIL only after AUTH
        "auth_require_tls": True,  # SC.MSS/CONF.07
        "auth_exclude_mechanism": ["PLAIN", "LOGIN"],  # EXTERNAL, XOAUTH2, OAUTHBEARER left
        "data_size_limit": settings.LPS_SUBMISSION_MAX_SIZE,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "command_call_limit": 1000,
    }


def protocol_factory(context: ssl.SSLContext) -> Callable[[], SubmissionSMTP]:
    handler = SubmissionHandler()
    kwargs = smtp_kwargs(context)
    return lambda: SubmissionSMTP(handler, **kwargs)


async def serve_until(stop: asyncio.Event, context: ssl.SSLContext, host: str, port: int) -> None:
    """Serve until ``stop`` is set. A message is answered 250 only once it is in the spool
    (durable), so closing at once loses nothing: the client resubmits what was not answered."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol_factory(context), host=host, port=port)
    await stop.wait()
    server.close()
    await server.wait_closed()
