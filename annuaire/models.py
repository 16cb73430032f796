"""The operator whitelist (liste blanche) of the MSSanté trust space.

Facts: ../shared/reference/mssante-spec.md §1.2. One version is current at a time; a sync
writes a complete new version and makes it current in one transaction, so a reader never sees
a half-loaded list, and a failed sync leaves the last good version in force.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class WhitelistVersion(models.Model):
    generated_at = models.DateTimeField(_("date de génération"))
    imported_at = models.DateTimeField(_("date d'import"), auto_now_add=True)
    source = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    signer_subject = models.CharField(max_length=500)
    entries = models.PositiveIntegerField(default=0)
    domains = models.PositiveIntegerField(default=0)
    dns = models.PositiveIntegerField(default=0)
    is_current = models.BooleanField(default=False)

    class Meta:
        verbose_name = _("version de la liste blanche")
        verbose_name_plural = _("versions de la liste blanche")
        ordering = ["-imported_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_current"], condition=Q(is_current=True), name="one_current_whitelist"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.generated_at:%Y-%m-%d} ({self.domains} domaines)"


class WhitelistEntry(models.Model):
    """One `Domaine` element: a domain and one certificate DN allowed to send for it."""

    version = models.ForeignKey(
        WhitelistVersion, on_delete=models.CASCADE, related_name="entry_set"
    )
    domain = models.CharField(max_length=253, db_index=True)  # lower-cased
    dn = models.CharField(max_length=1000)  # as published
    dn_key = models.CharField(max_length=1000, db_index=True)  # normalised RDNs (whitelist.dn_key)
    description = models.CharField(max_length=500, blank=True)
    responsible_contact = models.CharField(max_length=500, blank=True)
    support_contact = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("entrée de la liste blanche")
        verbose_name_plural = _("entrées de la liste blanche")

    def __str__(self) -> str:
        return f"{self.domain} — {self.dn}"


class WhitelistSyncRun(models.Model):
    class Result(models.TextChoices):
        SUCCESS = "success", _("succès")
        UNCHANGED = "unchanged", _("inchangée")
        FAILURE = "failure", _("échec")

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=500)
    result = models.CharField(max_length=10, choices=Result)
    error = models.TextField(blank=True)
    version = models.ForeignKey(WhitelistVersion, null=True, blank=True, on_delete=models.SET_NULL)
    stats = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("synchronisation de la liste blanche")
        verbose_name_plural = _("synchronisations de la liste blanche")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M} {self.result}"
