"""The single writer of functional traces (Référentiel #2 SC.MSS/CONF.17-18, peers.md §6.1).

Callers are services: they call ``audit_record`` inside their own transaction so that the trace
and the change it describes are committed together, or not at all. A trace never carries
content (no subject, no body, no claim values beyond identifiers).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models
from django.utils.translation import gettext_noop as _noop

from accounts.models import AuditEvent, Structure
from mssante_portal.sql import copy_insert, insert_statement

if TYPE_CHECKING:
    from django.http import HttpRequest

    from accounts.models import User


class Action(models.TextChoices):
    """Every action a trace may carry, with its French label (translated when shown:
    ``accounts.journal.action_label``). The one vocabulary of the audit trail: writers use
    these members, the journal reads their labels, and ``audit_record`` refuses anything else.
    """

    # Sign-in (accounts.psc, accounts.views)
    LOGIN = "auth.login", _noop("Connexion")
    LOGIN_FAILED = "auth.login_failed", _noop("Échec de connexion")
    LOGOUT = "auth.logout", _noop("Déconnexion")
    # Structures and people (accounts.services, mailboxes.console)
    STRUCTURE_CREATED = "structure.created", _noop("Création de la structure")
    RECOVERY_KEY_SET = "structure.recovery_key_set", _noop("Dépôt de la clé de recouvrement")
    STRUCTURE_SECTOR_SET = "structure.sector_set", _noop("Choix du type de structure")
    MEMBERSHIP_ADDED = "membership.added", _noop("Ajout d'un membre à la structure")
    MEMBERSHIP_INVITED = "membership.invited", _noop("Invitation d'un membre")
    MEMBERSHIP_ROLE_CHANGED = "membership.role_changed", _noop("Changement de rôle")
    MEMBERSHIP_REMOVED = "membership.removed", _noop("Retrait d'un membre de la structure")
    AUDIT_PURGED = "audit.purged", _noop("Purge du journal")
    # Reading and handling messages (mailboxes.webmail)
    MESSAGE_LIST = "message.list", _noop("Consultation d'un dossier")
    MESSAGE_READ = "message.read", _noop("Lecture d'un message")
    MESSAGE_BODY_READ = "message.body_read", _noop("Affichage du corps d'un message")
    MESSAGE_ATTACHMENT_DOWNLOAD = (
        "message.attachment_download",
        _noop("Téléchargement d'une pièce jointe"),
    )
    MESSAGE_FLAG = "message.flag", _noop("Marquage de messages")
    MESSAGE_MOVE = "message.move", _noop("Déplacement de messages")
    MESSAGE_DELETE = "message.delete", _noop("Suppression de messages")
    TRASH_EMPTIED = "mailbox.trash_emptied", _noop("Corbeille vidée")
    MESSAGE_RESTORED = "message.restored", _noop("Messages remis hors de la corbeille")
    MESSAGE_ATTACHMENT_PREVIEW = (
        "message.attachment_preview",
        _noop("Aperçu d'une pièce jointe"),
    )
    MESSAGE_PRINTED = "message.printed", _noop("Impression d'un message")
    # A BAL's folders of its own (mailboxes.webmail.services.folders)
    FOLDER_CREATED = "folder.created", _noop("Création d'un dossier")
    FOLDER_RENAMED = "folder.renamed", _noop("Renommage d'un dossier")
    FOLDER_DELETED = "folder.deleted", _noop("Suppression d'un dossier")
    # The handover of a team BAL's messages: « Je m'en occupe », « Terminé », « Rendre »
    MESSAGE_TAKEN = "message.taken", _noop("Prise en charge d'un message")
    MESSAGE_DONE = "message.done", _noop("Message traité")
    MESSAGE_RELEASED = "message.released", _noop("Prise en charge rendue")
    # Writing: compose, drafts, read receipts (RFC 8098)
    MESSAGE_SENT = "message.sent", _noop("Envoi d'un message")
    DRAFT_SAVED = "message.draft_saved", _noop("Enregistrement d'un brouillon")
    DRAFT_OPENED = "message.draft_opened", _noop("Ouverture d'un brouillon")
    MDN_SENT = "message.mdn_sent", _noop("Envoi d'un accusé de lecture")
    MDN_DECLINED = "message.mdn_declined", _noop("Refus d'un accusé de lecture")
    # A BAL's life and rights (mailboxes.console)
    MAILBOX_CREATED = "mailbox.created", _noop("Création de la BAL")
    MAILBOX_UPDATED = "mailbox.updated", _noop("Modification de la BAL")
    MAILBOX_SUSPENDED = "mailbox.suspended", _noop("Suspension de la BAL")
    MAILBOX_REACTIVATED = "mailbox.reactivated", _noop("Réactivation de la BAL")
    MAILBOX_CLOSED = "mailbox.closed", _noop("Fermeture de la BAL")
    MAILBOX_MAIL_DELETED = (
        "mailbox.mail_deleted",
        _noop("Suppression des messages de la BAL fermée"),
    )
    ACCESS_GRANTED = "mailbox.access_granted", _noop("Attribution d'un accès à la BAL")
    ACCESS_CHANGED = "mailbox.access_changed", _noop("Modification des droits d'accès à la BAL")
    ACCESS_REVOKED = "mailbox.access_revoked", _noop("Retrait d'un accès à la BAL")
    MAILBOX_EXPORTED = "mailbox.exported", _noop("Export de la BAL")
    EXPORT_DOWNLOADED = "mailbox.export_downloaded", _noop("Téléchargement d'un export de la BAL")
    NOTICE_CONFIGURED = "mailbox.notice_configured", _noop("Réglage de l'avis de nouveau message")
    NOTICE_SENT = "mailbox.notice_sent", _noop("Envoi d'un avis de nouveau message")
    QUOTA_SET = "mailbox.quota_set", _noop("Réglage du quota de la BAL")
    # The absence message of a BAL (mailboxes.webmail.services.absence, transport.absence)
    ABSENCE_SET = "mailbox.absence_set", _noop("Réglage du message d'absence")
    ABSENCE_CLEARED = "mailbox.absence_cleared", _noop("Arrêt du message d'absence")
    ABSENCE_REPLIED = "mailbox.absence_replied", _noop("Envoi d'une réponse d'absence")
    # Annuaire (mailboxes.console.services.publication)
    BAL_PUBLISHED = "annuaire.bal_published", _noop("Publication de la BAL dans l'annuaire")
    WHITELIST_SYNC = "annuaire.whitelist_sync", _noop("Synchronisation de la liste blanche")
    # Transport: the gateway, the relay (relay.<OutboundDelivery.Status>), the CRL sync
    GATEWAY_RECEIVED = "gateway.received", _noop("Réception d'un message (passerelle)")
    GATEWAY_REFUSED = (
        "gateway.refused",
        _noop("Refus d'un expéditeur ou d'un destinataire (passerelle)"),
    )
    RELAY_QUEUED = "relay.queued", _noop("Relais : nouvel essai programmé")
    RELAY_SENDING = "relay.sending", _noop("Relais : envoi en cours")
    RELAY_RELAYED = "relay.relayed", _noop("Relais : transmis à l'opérateur du destinataire")
    RELAY_DELIVERED = "relay.delivered", _noop("Relais : remis")
    RELAY_FAILED = "relay.failed", _noop("Relais : échec")
    CRL_SYNC = "tls.crl_sync", _noop("Synchronisation des listes de révocation")
    # The operator's console (mailboxes.operator): actions on the outbound queue
    DELIVERY_RETRIED = "operator.delivery_retried", _noop("Relance d'un envoi par l'opérateur")
    DELIVERY_ABANDONED = (
        "operator.delivery_abandoned",
        _noop("Abandon d'un envoi par l'opérateur (avis de non-remise à l'expéditeur)"),
    )
    # Software and mail clients (API LPS, mailboxes.software): IMAP and submission sessions
    SOFTWARE_LOGIN = "software.login", _noop("Connexion d'un logiciel (IMAP/SMTP)")
    SOFTWARE_LOGIN_FAILED = "software.login_failed", _noop("Échec de connexion d'un logiciel")
    SOFTWARE_SESSION_ENDED = (
        "software.session_ended",
        _noop("Fin de session d'un logiciel (jeton expiré)"),
    )
    # APP BALs by certificate (mailboxes.console.services.certificates): the bindings
    SOFTWARE_CERTIFICATE_BOUND = (
        "software.certificate_bound",
        _noop("Certificat d'un logiciel lié à une BAL applicative"),
    )
    SOFTWARE_CERTIFICATE_UNBOUND = (
        "software.certificate_unbound",
        _noop("Certificat d'un logiciel retiré d'une BAL applicative"),
    )


class TargetType(models.TextChoices):
    """What a trace is about. A model instance passed as ``target`` is named by its
    ``app_label.model`` (the first five); the others are given as ``target_type``."""

    MAILBOX = "mailboxes.mailbox", _noop("BAL")
    USER = "accounts.user", _noop("Personne")
    STRUCTURE = "accounts.structure", _noop("Structure")
    MEMBERSHIP = "accounts.membership", _noop("Appartenance à une structure")
    EXPORT = "mailboxes.mailboxexport", _noop("Export de BAL")
    # target_id is the Message-ID (gateway and relay traces)
    MESSAGE = "message", _noop("Message")
    # target_id is the CRL file in force
    CRL = "tls.crl", _noop("Liste de révocation")
    # target_id is the WhitelistSyncRun's id
    WHITELIST_SYNC_RUN = "annuaire.whitelistsyncrun", _noop("Synchronisation de la liste blanche")


_ACTIONS = frozenset(Action.values)
_TARGET_TYPES = frozenset(TargetType.values) | {""}


class UnknownAuditVocabulary(ValueError):
    """A writer used an action or a target type outside ``Action``/``TargetType``: a
    programming error, refused so that no trace is written that the journal cannot name."""


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address: the peer of the connection, or, when that peer is one of
    TRUSTED_PROXIES, the nearest ``X-Forwarded-For`` hop that is not a trusted proxy.

    X-Forwarded-For is read from the right (each proxy appends the address it saw), so that
    a client cannot choose its address by sending the header itself; the walk stops at a
    malformed entry and keeps the last valid address.
    """
    if request is None:
        return None
    current = _address(request.META.get("REMOTE_ADDR", ""))
    trusted = settings.TRUSTED_PROXIES
    if current is None or not trusted:
        return str(current) if current is not None else None
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    while any(current in net for net in trusted) and hops:
        previous = _address(hops.pop())
        if previous is None:
            break
        current = previous
    return str(current)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


SYSTEM_LABEL = "systeme"


def actor_label_of(actor: User | None) -> str:
    """The label of a trace's actor when a service acts for a person or for the operator's
    own tooling (``actor`` None): the person's own label is filled in by ``audit_event``."""
    return "" if actor else SYSTEM_LABEL


def audit_event(
    *,
    action: str,
    actor: User | None = None,
    actor_label: str = "",
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    structure: Structure | None = None,
    structure_id: int | None = None,
    success: bool = True,
    error_code: str = "",
    request: HttpRequest | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """One trace, not yet written: ``audit_record`` writes it, ``audit_record_many`` writes
    several at once. Arguments as for ``audit_record``."""
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(getattr(target, "public_id", target.pk))
    action, target_type = str(action), str(target_type)  # members hash by name, not value
    if action not in _ACTIONS:
        raise UnknownAuditVocabulary(f"audit action {action!r} is not in accounts.audit.Action")
    if target_type not in _TARGET_TYPES:
        raise UnknownAuditVocabulary(
            f"audit target type {target_type!r} is not in accounts.audit.TargetType"
        )
    if actor is not None and not actor_label:
        actor_label = actor.national_id or actor.username
    return AuditEvent(
        actor=actor,
        actor_label=actor_label[:150],
        action=action,
        target_type=target_type,
        target_id=target_id[:128],
        structure_id=structure.pk if structure is not None else structure_id,
        result=AuditEvent.Result.SUCCESS if success else AuditEvent.Result.FAILURE,
        error_code=error_code[:64],
        ip_address=client_ip(request) if request is not None else ip,
        details=details or {},
    )


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    actor_label: str = "",
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    structure: Structure | None = None,
    structure_id: int | None = None,
    success: bool = True,
    error_code: str = "",
    request: HttpRequest | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """Write one trace.

    ``action``: an ``Action``. ``target`` (a model instance with a ``public_id``) or
    ``target_type`` (a ``TargetType``) and ``target_id`` name what was acted on. ``details``
    holds identifiers only, never message or claim content. Raises UnknownAuditVocabulary for
    an action or target type outside the vocabulary. ``request`` gives the client address
    (``client_ip``); ``ip`` the peer's address when there is no HTTP request (an IMAP or
    SMTP session).
    """
    event = audit_event(
        action=action,
        actor=actor,
        actor_label=actor_label,
        target=target,
        target_type=target_type,
        target_id=target_id,
        structure=structure,
        structure_id=structure_id,
        success=success,
        error_code=error_code,
        request=request,
        details=details,
        ip=ip,
    )
    event.save(force_insert=True)
    return event


def audit_insert(event: AuditEvent) -> tuple[str, list[Any]]:
    """The INSERT of one trace built with ``audit_event``, and its parameters, for a writer
    that sends it in one statement with the rows it describes (a software's login:
    mailboxes.software.sessions); the row is exactly the one ``audit_record`` would write."""
    return insert_statement(event)


def audit_record_many(events: list[AuditEvent]) -> None:
    """Write several traces built with ``audit_event`` at once (the relay records a batch of
    messages); same rules as ``audit_record``. On PostgreSQL, several rows go as one COPY on
    the current connection (in its transaction): Django's bulk INSERT passes each column as
    an array, which psycopg adapts in Python, a third of the relay's CPU for a batch. The
    events get no primary key (nobody reads it back)."""
    if len(events) < 2 or connection.vendor != "postgresql":
        AuditEvent.objects.bulk_create(events, batch_size=500)
        return
    copy_insert(events)
