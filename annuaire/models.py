"""The operator whitelist (liste blanche) of the MSSanté trust space.

Facts: ../shared/reference/mssante-spec.md §1.2. One version is current at a time; a sync
writes a complete new version and makes it current in one transaction, so a reader never sees
a half-loaded list, and a failed sync leaves the last good version in force.
"""

from __future__ import annotations

import uuid
from typing import Protocol

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


# --- The national MSSanté directory (the daily extraction, ../shared/reference §A1) ---------


class _ExtractionRow(models.Model):
    """The 31 published columns (annuaire.extraction.COLUMNS) and our search columns."""

    bal_type = models.CharField(max_length=3)
    address = models.CharField(max_length=254)
    pp_id_type = models.CharField(max_length=2, blank=True)
    pp_id = models.CharField(max_length=20, blank=True)
    pp_national_id = models.CharField(max_length=30, blank=True)
    structure_id_type = models.CharField(max_length=10, blank=True)
    structure_id = models.CharField(max_length=30, blank=True)
    service = models.CharField(max_length=500, blank=True)
    civility = models.CharField(max_length=30, blank=True)
    last_name = models.CharField(max_length=500, blank=True)
    first_name = models.CharField(max_length=500, blank=True)
    category_code = models.CharField(max_length=10, blank=True)
    category_label = models.CharField(max_length=100, blank=True)
    profession_code = models.CharField(max_length=10, blank=True)
    profession_label = models.CharField(max_length=200, blank=True)
    specialty_code = models.CharField(max_length=20, blank=True)
    specialty_label = models.CharField(max_length=300, blank=True)
    paperless = models.CharField(max_length=10, blank=True)
    structure_name = models.CharField(max_length=500, blank=True)
    structure_sign = models.CharField(max_length=500, blank=True)
    addr_l2 = models.CharField(max_length=500, blank=True)
    addr_l3 = models.CharField(max_length=500, blank=True)
    addr_number = models.CharField(max_length=20, blank=True)
    addr_number_ext = models.CharField(max_length=20, blank=True)
    addr_street_type = models.CharField(max_length=20, blank=True)
    addr_street = models.CharField(max_length=500, blank=True)
    addr_l5 = models.CharField(max_length=500, blank=True)
    addr_l6 = models.CharField(max_length=500, blank=True)
    postal_code = models.CharField(max_length=10, blank=True)
    department = models.CharField(max_length=10, blank=True)
    country = models.CharField(max_length=100, blank=True)
    # Derived (annuaire.extraction.derive)
    domain = models.CharField(max_length=253)
    town = models.CharField(max_length=200, blank=True)
    name_norm = models.CharField(max_length=500, blank=True)
    given_norm = models.CharField(max_length=500, blank=True)
    search_norm = models.TextField(blank=True)
    row_hash = models.CharField(max_length=32)

    class Meta:
        abstract = True


class Labelled(Protocol):
    """What ``entry_label`` reads: a DirectoryEntry or a bare row of the autocomplete."""

    @property
    def bal_type(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def civility(self) -> str: ...
    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str: ...
    @property
    def structure_name(self) -> str: ...
    @property
    def structure_sign(self) -> str: ...


def entry_label(entry: Labelled) -> str:
    """How a BAL of the directory is shown: « Dr Hélène LEFÈVRE », or the structure's name
    (``DirectoryEntry.label``; the autocomplete applies it to bare rows)."""
    if entry.bal_type == "PER":
        name = " ".join(p for p in (entry.first_name, entry.last_name) if p)
        title = {"DR": "Dr", "PR": "Pr"}.get(entry.civility, "")
        return f"{title} {name}".strip() or entry.address
    return entry.structure_name or entry.structure_sign or entry.address


class DirectoryEntry(_ExtractionRow):
    """One BAL of the national directory, as the last good extraction says. Keyed by address
    (the file has no technical id). Search indexes (trigram on PostgreSQL) are in migration
    0003."""

    address = models.CharField(max_length=254, unique=True)

    class Meta:
        verbose_name = _("BAL de l'annuaire")
        verbose_name_plural = _("BAL de l'annuaire")
        indexes = [
            models.Index(fields=["pp_national_id"], name="annuaire_entry_pp"),
            models.Index(fields=["structure_id"], name="annuaire_entry_structure"),
            models.Index(fields=["postal_code"], name="annuaire_entry_postal"),
        ]

    def __str__(self) -> str:
        return self.address

    @property
    def label(self) -> str:
        """How people are shown: « Dr Hélène LEFÈVRE », or the structure's name."""
        return entry_label(self)

    @property
    def display_name(self) -> str:
        if self.bal_type == "PER":
            return " ".join(p for p in (self.civility, self.first_name, self.last_name) if p)
        return self.structure_name or self.service or self.address


class DirectoryName(models.Model):
    """The distinct last names (``name_norm``) of the directory, rewritten by each import in
    its transaction. The typo-tolerant search scores the names sharing the first letters of
    what was typed: read here, a few hundred rows, rather than tens of thousands of entries of
    the directory's index for the same few hundred names (issue 21). On PostgreSQL, the
    primary key's ``_like`` index (varchar_pattern_ops) serves those prefix reads."""

    name = models.CharField(max_length=500, primary_key=True)

    class Meta:
        verbose_name = _("nom de l'annuaire")
        verbose_name_plural = _("noms de l'annuaire")

    def __str__(self) -> str:
        return self.name


class DirectoryStaging(_ExtractionRow):
    """Scratch table of one import: the file is loaded here (COPY on PostgreSQL), then merged
    into DirectoryEntry in one transaction. Emptied before and after each run."""

    line = models.PositiveIntegerField()

    class Meta:
        verbose_name = _("ligne en cours d'import")

    def __str__(self) -> str:
        return f"{self.line}: {self.address}"


class DirectoryImport(models.Model):
    class Result(models.TextChoices):
        RUNNING = "running", _("en cours")
        SUCCESS = "success", _("succès")
        UNCHANGED = "unchanged", _("inchangé")
        FAILURE = "failure", _("échec")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=500)
    file_stamp = models.CharField(max_length=12, blank=True)  # YYYYMMDDhhmm of the file name
    sha256 = models.CharField(max_length=64, blank=True)
    result = models.CharField(max_length=10, choices=Result, default=Result.RUNNING)
    error = models.TextField(blank=True)
    initial = models.BooleanField(default=False)  # first load: no per-address diff recorded
    rows_read = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejects = models.JSONField(default=list, blank=True)  # [{"line", "reason"}], first 1,000
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("import de l'annuaire")
        verbose_name_plural = _("imports de l'annuaire")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M} {self.result}"


class DirectoryChange(models.Model):
    """One line of the diff between two imports, keyed by BAL address."""

    class Kind(models.TextChoices):
        ADDED = "added", _("ajoutée")
        UPDATED = "updated", _("modifiée")
        REMOVED = "removed", _("retirée")

    run = models.ForeignKey(DirectoryImport, on_delete=models.CASCADE, related_name="changes")
    address = models.CharField(max_length=254)
    kind = models.CharField(max_length=8, choices=Kind)
    fields = models.JSONField(default=dict, blank=True)  # updated: {field: [before, after]}

    class Meta:
        verbose_name = _("changement de l'annuaire")
        verbose_name_plural = _("changements de l'annuaire")
        indexes = [models.Index(fields=["run", "kind"], name="annuaire_change_run_kind")]

    def __str__(self) -> str:
        return f"{self.kind} {self.address}"
