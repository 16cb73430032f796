"""People, structures, roles and the audit trail.

A professional is keyed by their Pro Santé Connect ``SubjectNameID`` (idNat_PS:
``8``+RPPS, ``0``+ADELI, or an RPPS+/EDIT identifier; ../shared/reference/annuaire-psc-ins.md
§B4). They have no local password. The only password account is the break-glass operator
(``createsuperuser``), which reaches the Django admin and nothing else.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    national_id = models.CharField(
        _("identifiant national (idNat_PS)"), max_length=64, unique=True, null=True, blank=True
    )
    civility = models.CharField(_("civilité d'exercice"), max_length=8, blank=True)
    profession_code = models.CharField(_("code profession"), max_length=8, blank=True)
    category_code = models.CharField(_("catégorie professionnelle"), max_length=4, blank=True)
    savoir_faire_code = models.CharField(_("code savoir-faire"), max_length=16, blank=True)
    savoir_faire_type = models.CharField(_("type de savoir-faire"), max_length=4, blank=True)
    # Every exercice of the last userinfo, as received (no content, identity data only).
    professions = models.JSONField(_("exercices"), default=list, blank=True)
    last_auth_mode = models.CharField(_("moyen d'authentification"), max_length=16, blank=True)
    psc_refreshed_at = models.DateTimeField(
        _("dernière synchronisation PSC"), null=True, blank=True
    )

    class Meta:
        verbose_name = _("utilisateur")
        verbose_name_plural = _("utilisateurs")

    @property
    def display_name(self) -> str:
        full = f"{self.first_name} {self.last_name}".strip()
        return full or self.username


class Structure(models.Model):
    class IdentifierKind(models.TextChoices):
        FINESS_EJ = "finess_ej", _("FINESS entité juridique")
        FINESS_EG = "finess_eg", _("FINESS établissement")
        SIRET = "siret", _("SIRET")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    identifier_kind = models.CharField(
        _("type d'identifiant"), max_length=16, choices=IdentifierKind
    )
    identifier = models.CharField(_("identifiant"), max_length=14)
    name = models.CharField(_("raison sociale"), max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # The OpenPGP public key BAL exports are encrypted to (ASCII-armoured), uploaded by the
    # director; its private half never comes here.
    recovery_key = models.TextField(_("clé OpenPGP de recouvrement"), blank=True)
    recovery_key_fingerprint = models.CharField(max_length=64, blank=True)
    recovery_key_uploaded_at = models.DateTimeField(null=True, blank=True)
    # The key it replaced: exports made before the replacement need that key's private half.
    recovery_key_previous_fingerprint = models.CharField(max_length=64, blank=True)
    # The structure's sector (TRE_R02 code, e.g. SA17 for an EHPAD), set in the console: the
    # healthcareFacilityTypeCode of the health documents it sends (mailboxes.documents.codes).
    # Blank: not chosen yet, the directory's sector of its members stands in.
    facility_type_code = models.CharField(_("type de structure"), max_length=8, blank=True)

    class Meta:
        verbose_name = _("structure")
        verbose_name_plural = _("structures")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["identifier_kind", "identifier"], name="structure_identifier_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_identifier_kind_display()} {self.identifier})"


class StructureDomain(models.Model):
    """An MSSanté mail domain of a structure (`ehpad-les-tilleuls.mssante.fr`)."""

    structure = models.ForeignKey(Structure, on_delete=models.CASCADE, related_name="domains")
    domain = models.CharField(_("domaine MSSanté"), max_length=253, unique=True)

    class Meta:
        verbose_name = _("domaine")
        verbose_name_plural = _("domaines")
        ordering = ["domain"]
        constraints = [
            models.CheckConstraint(condition=Q(domain=Lower("domain")), name="domain_lowercase"),
        ]

    def __str__(self) -> str:
        return self.domain


class Membership(models.Model):
    class Role(models.TextChoices):
        DIRECTOR = "director", _("Directeur·rice (administre la structure)")
        MEMBER = "member", _("Membre")

    class Source(models.TextChoices):
        PSC = "psc", _("Activité Pro Santé Connect")
        INVITATION = "invitation", _("Invitation")
        OPERATOR = "operator", _("Opérateur")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    structure = models.ForeignKey(Structure, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("rôle"), max_length=16, choices=Role, default=Role.MEMBER)
    source = models.CharField(_("origine"), max_length=16, choices=Source)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("appartenance")
        verbose_name_plural = _("appartenances")
        constraints = [
            models.UniqueConstraint(fields=["user", "structure"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.structure} ({self.role})"


class Activity(models.Model):
    """A situation d'exercice from PSC (`SubjectRefPro.exercices[].activities[]`), refreshed at
    each sign-in. It may or may not match a structure hosted by this portal."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="activities"
    )
    position = models.PositiveSmallIntegerField()
    profession_code = models.CharField(max_length=8, blank=True)
    mode = models.CharField(_("mode d'exercice"), max_length=4, blank=True)
    sector_code = models.CharField(_("secteur d'activité"), max_length=8, blank=True)
    role_code = models.CharField(max_length=8, blank=True)
    name = models.CharField(_("raison sociale du site"), max_length=200, blank=True)
    finess_site = models.CharField(max_length=9, blank=True)
    finess_legal = models.CharField(max_length=9, blank=True)
    siret = models.CharField(max_length=14, blank=True)
    technical_id = models.CharField(max_length=32, blank=True)
    postal_code = models.CharField(max_length=10, blank=True)
    city = models.CharField(max_length=100, blank=True)
    structure = models.ForeignKey(
        Structure, null=True, blank=True, on_delete=models.SET_NULL, related_name="activities"
    )

    class Meta:
        verbose_name = _("situation d'exercice")
        verbose_name_plural = _("situations d'exercice")
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["user", "position"], name="activity_position_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class AuditEvent(models.Model):
    """A functional trace: who did what to what, when, and how it ended. Never content.

    Written only through ``accounts.audit.audit_record``. Append-only: on PostgreSQL a trigger
    refuses UPDATE and DELETE; old traces go through ``accounts.services.audit_purge``
    (migration 0003).
    """

    class Result(models.TextChoices):
        SUCCESS = "success", _("succès")
        FAILURE = "failure", _("échec")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Set when the trace is built (never changed after: the row is append-only).
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    # No index of its own: audit_actor_time (actor, -occurred_at) serves the foreign key too.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # A snapshot of who acted (national id or username), kept when the account goes away.
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)  # indexed below (audit_action)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=128, blank=True)
    structure = models.ForeignKey(
        Structure, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result = models.CharField(max_length=8, choices=Result)
    error_code = models.CharField(max_length=64, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("trace")
        verbose_name_plural = _("traces")
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["actor", "-occurred_at"], name="audit_actor_time"),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
            # One index for both = and LIKE 'prefix%' (the journal's filter by family): on
            # PostgreSQL, Django's db_index gave two (a plain one and a _like one). Every
            # index is written at each trace, and the gateway and the relay write one per
            # message.
            models.Index(fields=["action"], name="audit_action", opclasses=["varchar_pattern_ops"]),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.action} {self.result}"
