"""MSSanté mailboxes (BAL) and who may use them.

Types from TRE_R257-TypeBAL (../shared/reference/mssante-spec.md §2.3); the directory fields
each type carries (§5.1): description and service for ORG/APP, a responsible professional for
ORG/APP, the national id of the holder for PER, liste rouge for all.
Message content never lives here: it is in Dovecot.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from accounts.models import Structure, StructureDomain


class Mailbox(models.Model):
    class Kind(models.TextChoices):
        PER = "PER", _("Personnelle")
        ORG = "ORG", _("Organisationnelle")
        APP = "APP", _("Applicative")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        SUSPENDED = "suspended", _("Suspendue")
        CLOSED = "closed", _("Fermée")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    structure = models.ForeignKey(Structure, on_delete=models.PROTECT, related_name="mailboxes")
    domain = models.ForeignKey(StructureDomain, on_delete=models.PROTECT, related_name="mailboxes")
    local_part = models.CharField(_("partie locale"), max_length=64)
    address = models.CharField(_("adresse"), max_length=320, unique=True)
    kind = models.CharField(_("type de BAL"), max_length=3, choices=Kind)
    status = models.CharField(_("état"), max_length=10, choices=Status, default=Status.ACTIVE)
    display_name = models.CharField(_("nom affiché"), max_length=200)
    # PER: the professional who holds the BAL (tied to their national id).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="owned_mailboxes",
    )
    # ORG/APP: the habilitated professional who answers for the BAL.
    responsible = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="responsible_mailboxes",
    )
    service = models.CharField(_("service de rattachement"), max_length=200, blank=True)
    description = models.CharField(_("description"), max_length=500, blank=True)
    liste_rouge = models.BooleanField(_("liste rouge"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # New-mail notice to an ordinary address outside the trust space (no health data in it).
    notice_email = models.EmailField(_("adresse de notification"), max_length=320, blank=True)
    notice_interval_minutes = models.PositiveIntegerField(
        _("au plus une notification toutes les (minutes)"), default=60
    )
    notice_last_sent_at = models.DateTimeField(null=True, blank=True)
    # Mail the BAL may hold, set by the operator or the structure's director; none: no limit.
    # Enforced at delivery (mailboxes.transport.quota: 452 4.2.2 at the gateway).
    quota_bytes = models.PositiveBigIntegerField(_("quota (octets)"), null=True, blank=True)
    # The Dovecot backend that stores this BAL when Dovecot is a proxy in front of several
    # (settings.DOVECOT_BACKENDS, docs/deployment.md); empty: the first one listed (or the
    # single instance). Written at creation; moving a BAL is an operator's migration.
    dovecot_backend = models.CharField(
        _("serveur de messagerie"), max_length=32, blank=True, default=""
    )

    class Meta:
        verbose_name = _("BAL")
        verbose_name_plural = _("BAL")
        ordering = ["address"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="PER", owner__isnull=False) | ~Q(kind="PER")),
                name="mailbox_per_has_owner",
            ),
            models.CheckConstraint(
                condition=(Q(kind="PER") | Q(responsible__isnull=False)),
                name="mailbox_org_app_has_responsible",
            ),
            models.CheckConstraint(
                condition=Q(address__contains="@"), name="mailbox_address_has_at"
            ),
        ]

    def __str__(self) -> str:
        return self.address


class MailboxAccess(models.Model):
    """A person's rights on a BAL that is not theirs: member of an ORG/APP BAL, or delegate of
    a PER BAL. Four rights (mailboxes.access.Access): read (always), organise (flags, move, put
    in the Trash), send, manage (empty the Trash, delete for good, the BAL's delegations; never
    on a PER BAL, whose holder alone delegates it)."""

    class Kind(models.TextChoices):
        MEMBER = "member", _("Membre")
        DELEGATE = "delegate", _("Délégué·e")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="accesses")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mailbox_accesses"
    )
    kind = models.CharField(max_length=10, choices=Kind)
    can_read = models.BooleanField(_("lire"), default=True)
    can_organise = models.BooleanField(_("classer"), default=False)
    can_send = models.BooleanField(_("envoyer"), default=False)
    can_manage = models.BooleanField(_("gérer"), default=False)
    # Delegations may end by themselves; after this instant the right no longer exists.
    expires_at = models.DateTimeField(_("fin de la délégation"), null=True, blank=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("droit sur une BAL")
        verbose_name_plural = _("droits sur les BAL")
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "user"], name="mailbox_access_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} -> {self.mailbox} ({self.kind})"

    @property
    def rights_label(self) -> str:
        """The rights in words, as the console, the holder's page and notices show them."""
        rights = [
            (self.can_read, _("lecture")),
            (self.can_organise, _("classement")),
            (self.can_send, _("envoi")),
            (self.can_manage, _("gestion")),
        ]
        return ", ".join(str(label) for held, label in rights if held)


class OutboundMessage(models.Model):
    """The outbound spool (ARCHITECTURE.md, data flow 2): a message accepted for delivery and
    not yet delivered to every recipient. The content is kept here, in the same transaction as
    its delivery rows, and cleared once every row reached a final state."""

    class Origin(models.TextChoices):
        WEBMAIL = "webmail", _("Webmail")
        GATEWAY = "gateway", _("Passerelle (nouvel essai de remise locale)")
        REPORT = "report", _("Avis de remise (DSN) produit par l'opérateur")
        NOTICE = "notice", _("Avis du portail à une BAL (délégations, clé de recouvrement)")
        SOFTWARE = "software", _("Logiciel ou client de messagerie (soumission)")
        AUTOREPLY = "autoreply", _("Message d'absence (réponse automatique, RFC 3834)")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    origin = models.CharField(max_length=10, choices=Origin)
    # The sending BAL (webmail); null for what the operator itself emits (reports, retries).
    mailbox = models.ForeignKey(
        Mailbox, null=True, blank=True, on_delete=models.PROTECT, related_name="outbound"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT
    )
    envelope_from = models.CharField(
        max_length=320, blank=True
    )  # "" = null sender (RFC 5321 §4.5.5)
    message_id = models.CharField(max_length=255, blank=True)
    content = models.BinaryField()
    size = models.PositiveIntegerField()
    ret = models.CharField(max_length=4, blank=True)  # RFC 3461 §4.3 FULL | HDRS
    envid = models.CharField(max_length=100, blank=True)  # RFC 3461 §4.4
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(ret__in=["", "FULL", "HDRS"]), name="outbound_ret_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.message_id or self.public_id}"


class OutboundDelivery(models.Model):
    """One recipient of an outbound message, and what became of it."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("En attente")
        SENDING = "sending", _("En cours d'envoi")
        RELAYED = "relayed", _("Transmis à l'opérateur du destinataire")
        DELIVERED = "delivered", _("Remis")
        FAILED = "failed", _("Échec")

    FINAL = (Status.RELAYED, Status.DELIVERED, Status.FAILED)

    # No public_id: a delivery never appears in a URL (its message does), and its unique index
    # took an entry at each of the two row versions per recipient (claim, outcome).
    # No index of its own: delivery_one_per_recipient (message, recipient) serves lookups by
    # message, and every row version written costs one index entry less.
    message = models.ForeignKey(
        OutboundMessage, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    recipient = models.CharField(max_length=320)
    domain = models.CharField(max_length=255)
    local = models.BooleanField(default=False)  # hosted by us: LMTP, no SMTP hop
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    notify = models.CharField(max_length=40, blank=True)  # RFC 3461 §4.1 (empty: default)
    orcpt = models.CharField(max_length=400, blank=True)  # RFC 3461 §4.2
    last_reply = models.CharField(max_length=500, blank=True)
    remote_mta = models.CharField(max_length=255, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "recipient"], name="delivery_one_per_recipient"
            )
        ]

    def __str__(self) -> str:
        return f"{self.recipient} ({self.status})"


class DailyIndicator(models.Model):
    """Counters that feed the operator's indicators (mssante-spec §5.2): messages received
    and sent per day, per BAL type and per peer domain. Counts only, never content."""

    day = models.DateField()
    name = models.CharField(max_length=40)  # e.g. "inbound.delivered", "outbound.failed"
    key = models.CharField(max_length=255, blank=True)  # peer domain or BAL type
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "name", "key"], name="indicator_unique")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.name} {self.key}: {self.count}"


class MailboxExport(models.Model):
    """An encrypted archive of a whole BAL (every folder), made before closing it or on a
    director's request. The archive is OpenPGP-encrypted to the structure's recovery key; we
    keep its checksum so that whoever holds the file can prove it is the one we made."""

    class Purpose(models.TextChoices):
        EXPORT = "export", _("Export")
        CLOSE = "close", _("Fermeture")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="exports")
    purpose = models.CharField(max_length=8, choices=Purpose)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    path = models.CharField(max_length=500)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    messages = models.PositiveIntegerField()
    folders = models.PositiveIntegerField()
    key_fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("export de BAL")
        verbose_name_plural = _("exports de BAL")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.mailbox} {self.created_at:%Y-%m-%d} ({self.purpose})"


class MailboxJob(models.Model):
    """A close or an export of a BAL, run by the store worker (the process that mounts the
    mail, Celery queue ``store``) and polled by the console. The row is the truth: the task
    claims it with a conditional update, reports progress here, and ends it in ``termine``
    or ``echec`` with a French message saying what happened."""

    class Kind(models.TextChoices):
        CLOSE = "close", _("Fermeture")
        EXPORT = "export", _("Export")

    class State(models.TextChoices):
        QUEUED = "en_attente", _("En attente")
        RUNNING = "en_cours", _("En cours")
        DONE = "termine", _("Terminé")
        FAILED = "echec", _("Échec")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=8, choices=Kind)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.PROTECT, related_name="jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=State, default=State.QUEUED)
    done = models.PositiveIntegerField(default=0)  # messages written to the archive
    total = models.PositiveIntegerField(default=0)  # messages the BAL held when it started
    error = models.TextField(blank=True)  # in French, for the director
    export = models.ForeignKey(
        MailboxExport, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Written with the progress: a running job whose worker died stops beating (the sweep).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("tâche de BAL")
        verbose_name_plural = _("tâches de BAL")
        ordering = ["-created_at"]
        constraints = [
            # One close or export at a time per BAL.
            models.UniqueConstraint(
                fields=["mailbox"],
                condition=Q(state__in=["en_attente", "en_cours"]),
                name="mailboxjob_one_active_per_mailbox",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.mailbox} ({self.state})"


class MailboxMonthlyUsage(models.Model):
    """Usage of one BAL in one month (ANS usage indicators): messages received and sent,
    distinct correspondents, partner domains and structures. Derived from the traces and the
    outbound spool rows by a periodic task, so it survives the traces' retention."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="usage")
    month = models.DateField()  # first day of the month
    received = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    correspondents = models.PositiveIntegerField(default=0)
    domains = models.JSONField(default=dict, blank=True)  # {domain: messages}
    structures = models.JSONField(default=dict, blank=True)  # {structure name: messages}
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("usage mensuel d'une BAL")
        verbose_name_plural = _("usages mensuels des BAL")
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "month"], name="usage_one_per_month")
        ]

    def __str__(self) -> str:
        return f"{self.mailbox} {self.month:%Y-%m}"


class GatewayAttempt(models.Model):
    """A delivery the gateway began: written before the message goes to Dovecot, in the same round
    trip as the duplicate check (mailboxes/transport/gateway/dedup.py). A later transaction of the
    same message (same resend key: Message-ID, envelope sender, text, peer) for these recipients
    that finds no success trace cannot know whether Dovecot stored the message (the gateway was
    killed, Dovecot died before answering): it looks in the BAL's INBOX first. Never content (a
    digest of it); purged after ``dedup.WINDOW``."""

    message_id = models.CharField(max_length=128)  # its first 128 characters, for people
    resend_key = models.CharField(max_length=64, default="")  # dedup.resend_key
    recipients = models.JSONField(default=list)
    started_at = models.DateTimeField()

    class Meta:
        verbose_name = _("tentative de remise (passerelle)")
        verbose_name_plural = _("tentatives de remise (passerelle)")
        indexes = [models.Index(fields=["resend_key"], name="gateway_attempt_key")]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.started_at:%Y-%m-%d %H:%M})"


class Signature(models.Model):
    """A person's plain-text signature for one BAL, inserted on the new messages and replies
    they write from it: each colleague of a team BAL signs with their own name."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="signatures")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signatures"
    )
    text = models.TextField(_("signature"), max_length=2000)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("signature")
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "user"], name="signature_one_per_person")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.mailbox}"


class MessageHandling(models.Model):
    """Who took a message of a team BAL in charge, and whether it is done: the handover an
    SSIAD or EHPAD team needs between shifts. Keyed by Message-ID, so that it follows the
    message from folder to folder; the IMAP keywords ($MSSPrisEnCharge, $MSSTermine) mirror
    the state for the list's filters, this row says who and when. Its history is the journal."""

    class State(models.TextChoices):
        TAKEN = "taken", _("pris en charge")
        DONE = "done", _("terminé")

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="handlings")
    message_id = models.CharField(max_length=998)
    state = models.CharField(max_length=8, choices=State)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField()

    class Meta:
        verbose_name = _("prise en charge")
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "message_id"], name="message_handling_one_per_message"
            )
        ]
        indexes = [models.Index(fields=["mailbox", "by", "state"], name="handling_by_state")]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.state})"


class SoftwareLogin(models.Model):
    """An IMAP session a software opened with a PSC token (API LPS): it lasts while the token
    does (SC.MSS/CONF.10; CONF.11: the software reopens it with a refreshed token). The token
    itself is never kept (CONF.28): only when it expires."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    remote = models.GenericIPAddressField(null=True, blank=True)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("session d'un logiciel")
        verbose_name_plural = _("sessions des logiciels")
        indexes = [
            models.Index(
                fields=["expires_at"], name="software_login_open", condition=Q(ended_at=None)
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.mailbox} (→ {self.expires_at:%H:%M:%S})"


class AppCertificate(models.Model):
    """A software's TLS client certificate bound by the structure's director to one APP BAL
    (API LPS, mssante-spec §2.2): the software logs in with SASL EXTERNAL, without a token or
    a password. IMAP finds the binding by the certificate's CN (Dovecot 2.3 hands its passdb
    the CN only), hence one BAL per CN; submission by the exact certificate (SHA-256). The
    certificate itself is public: it is kept to show it and to check it again."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="certificates")
    fingerprint = models.CharField(_("empreinte SHA-256"), max_length=64, unique=True)
    common_name = models.CharField(_("nom commun (CN)"), max_length=255, db_index=True)
    subject = models.CharField(_("sujet"), max_length=1000)
    issuer = models.CharField(_("émetteur"), max_length=1000)
    serial = models.CharField(_("numéro de série"), max_length=64)
    not_after = models.DateTimeField(_("valable jusqu'au"))
    pem = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = _("certificat d'un logiciel")
        verbose_name_plural = _("certificats des logiciels")
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.common_name} → {self.mailbox}"


class Absence(models.Model):
    """A BAL's absence message: from ``starts_on`` to ``ends_on`` (both included, local
    dates), mail explicitly addressed to the BAL gets one automatic reply per sender
    (RFC 3834 personal responder, mailboxes/transport/absence.py). Never a forward."""

    mailbox = models.OneToOneField(Mailbox, on_delete=models.CASCADE, related_name="absence")
    starts_on = models.DateField(_("du"))
    ends_on = models.DateField(_("au"))
    text = models.TextField(_("message"), max_length=4000)
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("message d'absence")
        verbose_name_plural = _("messages d'absence")
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_on__gte=models.F("starts_on")), name="absence_ends_after_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.mailbox} ({self.starts_on} → {self.ends_on})"


class AbsenceReply(models.Model):
    """One automatic reply sent to ``sender`` for the absence period of a BAL that started
    on ``period_start``: the unique constraint is what makes it « once per sender per
    period » across concurrent gateways and relay workers (RFC 3834 §2, SHOULD NOT send
    more than one response to a sender within a period)."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="+")
    sender = models.CharField(max_length=320)
    period_start = models.DateField()
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("réponse d'absence envoyée")
        verbose_name_plural = _("réponses d'absence envoyées")
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "sender", "period_start"], name="absence_reply_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.mailbox} → {self.sender} ({self.period_start})"
