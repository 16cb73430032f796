"""Opening a BAL from a software or a mail client (API LPS, mssante-spec §2.2): a PSC token, the
BAL named by the login, the same rights as the webmail (mailboxes.access), a trace either way
(SC.MSS/CONF.17-18)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from accounts.audit import Action, audit_event, audit_insert, audit_record, audit_record_many
from accounts.models import AuditEvent, User
from mailboxes.access import Access, Grant, login_grant
from mailboxes.models import AppCertificate, Mailbox, SoftwareLogin
from mailboxes.software.psc import TokenRefused, token_identity
from mailboxes.store.dovecot_lps import GROUPS, IMAP_MANAGE, IMAP_ORGANISE, IMAP_READ
from mssante_portal.errors import PortalError
from mssante_portal.sql import column, insert_statement


class LoginRefused(PortalError):
    code = "software_login_refused"
    http_status = 403
    user_message = "Connexion refusée : ce jeton n'ouvre pas cette boîte aux lettres."

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


@dataclass(frozen=True)
class SoftwareSession:
    grant: Grant
    user: User | None  # None: a software opened its APP BAL with its certificate
    software: str  # the PSC client the professional signed in to, or the certificate's CN
    expires: int  # when the token (or the certificate) ends, and the session with it (CONF.10)
    certificate: AppCertificate | None = None  # the binding a certificate session rests on

    @property
    def actor_label(self) -> str:
        """Who acts, in the journal, when no person does."""
        return certificate_actor(self.software) if self.user is None else ""


def certificate_actor(common_name: str) -> str:
    """How the journal names a software that acts with its certificate (no person does)."""
    return f"logiciel « {common_name[:200]} » (certificat)"


def imap_group(grant: Grant) -> str:
    """The ACL group carrying ``grant`` in the IMAP session ("" for a PER BAL's holder, who
    has every right, as in the webmail). A suspended BAL is read-only for everyone, as in the
    webmail."""
    if grant.mailbox.status == Mailbox.Status.SUSPENDED:
        return GROUPS[IMAP_READ]
    if grant.relation in ("owner", "certificate"):
        return ""
    if grant.allows(Access.MANAGE):
        return GROUPS[IMAP_MANAGE]
    if grant.allows(Access.ORGANISE):
        return GROUPS[IMAP_ORGANISE]
    return GROUPS[IMAP_READ]


def _refused(
    *, reason: str, address: str, service: str, remote: str | None, user: User | None = None,
    mailbox: Mailbox | None = None, software: str = "", actor_label: str = "inconnu",
) -> LoginRefused:  # fmt: skip
    audit_record(
        action=Action.SOFTWARE_LOGIN_FAILED,
        actor=user,
        actor_label="" if user else actor_label,
        target=mailbox,
        structure=mailbox.structure if mailbox else None,
        success=False,
        error_code=reason,
        ip=remote,
        details={"service": service, "software": software, "login": address[:254]},
    )
    return LoginRefused(reason)


def software_login(
    *, address: str, token: str, service: str, remote: str | None, need: Access = Access.READ
) -> SoftwareSession:
    """Open the BAL ``address`` for the holder of the PSC ``token`` (IMAP or submission).

    The token must be live at PSC (``psc.token_identity``), its professional known here and
    holding ``need`` on that BAL, as in the webmail (delegations and team BALs included).
    Raises LoginRefused (the failure traced, the reason in the trace only) or PscUnavailable.
    Traces the login with the software's name and the client address; a refusal's trace is
    written on its own (it must stay in the journal), a login's with its session row."""
    address = address.strip().lower()
    try:
        identity = token_identity(token)
    except TokenRefused as exc:
        raise _refused(reason=exc.reason, address=address, service=service, remote=remote) from None
    # One query for the person, the BAL and the right, asked anew at every login. A
    # deactivated account opens nothing, as it cannot sign in to the webmail either.
    user, mailbox, grant = login_grant(identity.national_id, address)
    if grant is None or not grant.allows(need):
        raise _refused(
            reason="no_right" if user is not None else "unknown_person",
            address=address, service=service, remote=remote, user=user, mailbox=mailbox,
            software=identity.client_id,
        )  # fmt: skip
    assert user is not None
    event = audit_event(
        action=Action.SOFTWARE_LOGIN,
        actor=user,
        target=grant.mailbox,
        structure=grant.mailbox.structure,
        ip=remote,
        details={"service": service, "software": identity.client_id, "relation": grant.relation},
    )
    if service == "imap":
        _session_open(event, grant.mailbox, user, remote, identity.expires)
    else:
        audit_record_many([event])
    return SoftwareSession(grant, user, identity.client_id, identity.expires)


_SESSIONS_END = """
    UPDATE {table} SET {ended_at} = %s
    WHERE {mailbox} = %s AND {user} = %s AND {remote} IS NOT DISTINCT FROM %s AND {ended_at} IS NULL
"""


def _session_open(
    event: AuditEvent, mailbox: Mailbox, user: User, remote: str | None, expires: int
) -> None:
    """Write the login's trace ``event`` and the row noting when this IMAP session must end;
    a newer login of the same person from the same address supersedes the earlier ones (the
    software reopened with a refreshed token). All or nothing, in one commit: on PostgreSQL
    one statement (data-modifying CTEs), a round trip instead of five and no ORM compilation
    at every login; elsewhere (the embedded SQLite) one transaction."""
    now = timezone.now()
    row = SoftwareLogin(
        mailbox=mailbox, user=user, remote=remote, expires_at=datetime.fromtimestamp(expires, UTC)
    )
    if connection.vendor != "postgresql":
        with transaction.atomic():
            audit_record_many([event])
            SoftwareLogin.objects.filter(
                mailbox=mailbox, user=user, remote=remote, ended_at=None
            ).update(ended_at=now)
            row.save(force_insert=True)
        return
    trace, trace_params = audit_insert(event)
    insert, insert_params = insert_statement(row)
    names = ("ended_at", "mailbox", "user", "remote")
    end = _SESSIONS_END.format(
        table=connection.ops.quote_name(SoftwareLogin._meta.db_table),
        **{name: column(SoftwareLogin, name) for name in names},
    )
    # Prepared as the ORM prepares them (the row's own fields, just built above).
    fields = {f.name: f for f in SoftwareLogin._meta.concrete_fields}
    end_params = [
        fields["ended_at"].get_db_prep_save(now, connection), mailbox.pk, user.pk,
        fields["remote"].get_db_prep_save(remote, connection),
    ]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH trace AS ({trace}), ended AS ({end}) {insert}",
            [*trace_params, *end_params, *insert_params],
        )


def certificate_login(
    *,
    login: str,
    service: str,
    remote: str | None,
    common_name: str = "",
    fingerprint: str = "",
) -> SoftwareSession:
    """Open the APP BAL a software's TLS client certificate is bound to (SASL EXTERNAL).

    The certificate was verified by the TLS layer (chain to LPS_CLIENT_CA_BUNDLE, CRLs in
    force); the binding is found by its exact ``fingerprint`` (submission) or, where the
    server tells only the subject's CN (Dovecot 2.3's IMAP), by ``common_name``: one CN is
    bound to one BAL at most (mailboxes.console.services.certificates). ``login``: the BAL
    the client asked for (the SASL authorization identity), "" for the bound one; any other
    BAL is refused. Raises LoginRefused (traced). Traces the login, naming the software."""
    login = login.strip().lower()
    bindings = AppCertificate.objects.select_related("mailbox__structure")
    if fingerprint:
        bound = bindings.filter(fingerprint=fingerprint.lower()).first()
    else:
        bound = bindings.filter(common_name=common_name).first() if common_name else None
    label = certificate_actor(bound.common_name if bound else common_name)
    if bound is None:
        raise _refused(
            reason="unknown_certificate", address=login, service=service, remote=remote,
            actor_label=label,
        )  # fmt: skip
    mailbox = bound.mailbox
    now = timezone.now()
    if login and login != mailbox.address:
        reason = "other_mailbox"
    elif bound.not_after <= now:
        reason = "certificate_expired"
    elif mailbox.kind != Mailbox.Kind.APP or mailbox.status not in (
        Mailbox.Status.ACTIVE, Mailbox.Status.SUSPENDED
    ):  # fmt: skip
        reason = "mailbox_unusable"
    else:
        reason = ""
    if reason:
        raise _refused(
            reason=reason, address=login or mailbox.address, service=service, remote=remote,
            mailbox=mailbox, software=bound.common_name, actor_label=label,
        )  # fmt: skip
    grant = Grant(
        mailbox=mailbox, read=True, organise=True, send=True, manage=False, relation="certificate"
    )
    audit_record(
        action=Action.SOFTWARE_LOGIN,
        actor_label=label,
        target=mailbox,
        structure=mailbox.structure,
        ip=remote,
        details={
            "service": service,
            "software": bound.common_name,
            "mechanism": "EXTERNAL",
            "fingerprint": bound.fingerprint,
        },
    )
    return SoftwareSession(
        grant=grant,
        user=None,
        software=bound.common_name,
        expires=int(bound.not_after.timestamp()),
        certificate=bound,
    )


def certificate_still_bound(session: SoftwareSession) -> bool:
    """Whether the binding a certificate session rests on still holds (unbinding takes effect
    at the session's next command)."""
    assert session.certificate is not None
    return AppCertificate.objects.filter(
        pk=session.certificate.pk, mailbox_id=session.grant.mailbox.pk
    ).exists()
