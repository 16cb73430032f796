"""Reads of the national directory: search (the annuaire page), autocomplete (compose) and
the lookups the recipient check needs. Exposed through annuaire.selectors.

Every name is compared in its search form (annuaire.extraction.norm: no accents, lower case,
no apostrophes), so « Lefèvre », « LEFEVRE » and « lefevre » are one. On PostgreSQL the
prefix indexes are on ``COLLATE "C"`` expressions (migration 0003) so that a prefix query
reads its first ten rows in index order and stops; typos are caught by trigram similarity
(pg_trgm). The embedded SQLite default has prefixes and substrings, no typo tolerance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Case, F, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Collate

from annuaire.extraction import norm
from annuaire.models import DirectoryEntry, DirectoryImport

PAGE_SIZE = 20
SUGGESTIONS = 10
_DIGITS = re.compile(r"^\d+$")
_DEPARTMENT = re.compile(r"^(\d{2,3}|2[ab])$", re.IGNORECASE)


def _pg() -> bool:
    return connection.vendor == "postgresql"


def _prefix(qs: QuerySet[DirectoryEntry], column: str, value: str) -> QuerySet[DirectoryEntry]:
    """Rows whose ``column`` starts with ``value``, in index order (C collation on PG)."""
    if _pg():
        alias = f"{column}_c"
        return (
            qs.annotate(**{alias: Collate(F(column), "C")})
            .filter(**{f"{alias}__startswith": value})
            .order_by(alias)
        )
    return qs.filter(**{f"{column}__startswith": value}).order_by(column)


def _contains_all(qs: QuerySet[DirectoryEntry], tokens: list[str]) -> QuerySet[DirectoryEntry]:
    for token in tokens:
        qs = qs.filter(search_norm__contains=token)
    return qs


def _similar(qs: QuerySet[DirectoryEntry], column: str, value: str) -> QuerySet[DirectoryEntry]:
    """Typo-tolerant match on PostgreSQL (pg_trgm ``%``, best first); nothing on SQLite."""
    if not _pg():
        return qs.none()
    table = DirectoryEntry._meta.db_table
    return qs.extra(  # noqa: S610 (column names are ours, the value is a parameter)
        where=[f'"{table}"."{column}" %% %s'],
        params=[value],
        select={"similarity": f'similarity("{table}"."{column}", %s)'},
        select_params=[value],
        order_by=["-similarity"],
    )


# --- Autocomplete ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    address: str
    label: str  # "Dr Claire MARTIN" or "CENTRE HOSPITALIER DE LYON"
    detail: str  # "Médecin · Cardiologie · LYON" or "Secrétariat médical · LYON"
    bal_type: str


def _suggestion(entry: DirectoryEntry) -> Suggestion:
    if entry.bal_type == "PER":
        label = " ".join(p for p in (entry.first_name, entry.last_name) if p)
        if entry.civility in ("DR", "PR"):
            label = f"{entry.civility.capitalize()} {label}"
        parts = [entry.profession_label, entry.specialty_label, entry.town]
    else:
        label = entry.structure_name or entry.structure_sign or entry.address
        parts = [entry.service, entry.town]
    return Suggestion(entry.address, label, " · ".join(p for p in parts if p), entry.bal_type)


SUGGEST_FIELDS = (
    "address",
    "bal_type",
    "civility",
    "first_name",
    "last_name",
    "profession_label",
    "specialty_label",
    "town",
    "structure_name",
    "structure_sign",
    "service",
)


def directory_suggest(text: str, limit: int = SUGGESTIONS) -> list[Suggestion]:
    """The best ``limit`` BALs for what is being typed: an address prefix, a name (last or
    first name, in any order, typos tolerated on PostgreSQL) or a structure and service."""
    text = text.strip()
    if len(text) < 2:
        return []
    base = DirectoryEntry.objects.only(*SUGGEST_FIELDS)
    found: dict[str, DirectoryEntry] = {}

    def take(qs: QuerySet[DirectoryEntry]) -> None:
        if len(found) >= limit:
            return
        for entry in qs[:limit]:
            found.setdefault(entry.address, entry)
            if len(found) >= limit:
                return

    if "@" in text or ("." in text and " " not in text):
        take(_prefix(base, "address", text.lower()))
        return [_suggestion(e) for e in found.values()]
    tokens = norm(text).split()
    if not tokens:
        return []
    keys = sorted({t for t in tokens if len(t) >= 2}, key=len, reverse=True)[:3]
    for key in keys:
        others = [t for t in tokens if t != key]
        take(_contains_all(_prefix(base.filter(bal_type="PER"), "name_norm", key), others))
    for key in keys:
        others = [t for t in tokens if t != key]
        take(_contains_all(_prefix(base.filter(bal_type="PER"), "given_norm", key), others))
    if len(found) < limit and max(len(t) for t in tokens) >= 3:
        # Structures and services (ORG/APP): substrings of the name, service or town.
        orgs = _contains_all(base.exclude(bal_type="PER"), tokens).order_by("structure_name")
        take(orgs)
    if len(found) < limit and keys and len(keys[0]) >= 4:
        take(_similar(base.filter(bal_type="PER"), "name_norm", keys[0]))
    return [_suggestion(e) for e in found.values()]


# --- Search (the annuaire page) ----------------------------------------------------------------


@dataclass
class DirectoryQuery:
    kind: str = "pro"  # "pro" (professionals) or "structure"
    last_name: str = ""
    first_name: str = ""
    profession: str = ""  # TRE_G15 code
    specialty: str = ""  # savoir-faire code
    place: str = ""  # postal code, department or town
    identifier: str = ""  # RPPS / idNat_PS, or FINESS / SIRET for structures
    structure: str = ""  # structure name (kind == "structure")
    extra: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not any(
            (
                self.last_name,
                self.first_name,
                self.profession,
                self.specialty,
                self.place,
                self.identifier,
                self.structure,
            )
        )


def _place(qs: QuerySet[DirectoryEntry], place: str) -> QuerySet[DirectoryEntry]:
    place = place.strip()
    if _DIGITS.match(place) and len(place) == 5:
        return qs.filter(postal_code=place)
    if _DEPARTMENT.match(place):
        return qs.filter(department=place.upper())
    if _DIGITS.match(place):
        return qs.filter(postal_code__startswith=place)
    return _contains_all(qs, norm(place).split())


def directory_search(query: DirectoryQuery, page: int = 1) -> Page:
    """Professionals (PER BALs, best name match first) or structures (ORG/APP BALs grouped by
    structure). Each row is one BAL; the page template groups a person's or a structure's."""
    qs = DirectoryEntry.objects.all()
    if query.kind == "structure":
        qs = qs.exclude(bal_type="PER")
        if query.identifier:
            qs = qs.filter(structure_id=query.identifier.strip())
        if query.structure:
            qs = _contains_all(qs, norm(query.structure).split())
        if query.place:
            qs = _place(qs, query.place)
        qs = qs.order_by("structure_name", "structure_id", "service", "address")
        return Paginator(qs, PAGE_SIZE).get_page(page)
    qs = qs.filter(bal_type="PER")
    if query.identifier:
        ident = query.identifier.strip()
        qs = qs.filter(Q(pp_national_id=ident) | Q(pp_id=ident))
    if query.profession:
        qs = qs.filter(profession_code=query.profession)
    if query.specialty:
        qs = qs.filter(specialty_code=query.specialty)
    if query.place:
        qs = _place(qs, query.place)
    if query.first_name:
        qs = qs.filter(given_norm__startswith=norm(query.first_name))
    order = ["name_norm", "given_norm", "pp_national_id", "address"]
    if query.last_name:
        wanted = norm(query.last_name)
        close = Q(name_norm__startswith=wanted)
        if _pg():
            table = DirectoryEntry._meta.db_table
            # Typo-tolerant: exact first, then prefix, then by similarity.
            qs = qs.extra(  # noqa: S610
                where=[f'("{table}"."name_norm" LIKE %s OR "{table}"."name_norm" %% %s)'],
                params=[wanted.replace("%", "") + "%", wanted],
                select={"similarity": f'similarity("{table}"."name_norm", %s)'},
                select_params=[wanted],
            )
            qs = qs.annotate(
                rank=Case(
                    When(name_norm=wanted, then=Value(2)),
                    When(close, then=Value(1)),
                    default=Value(0),
                    output_field=IntegerField(),
                )
            )
            qs = qs.extra(order_by=["-rank", "-similarity", *order])
            return Paginator(qs, PAGE_SIZE).get_page(page)
        qs = qs.filter(close)
    return Paginator(qs.order_by(*order), PAGE_SIZE).get_page(page)


def directory_choices() -> dict[str, list[tuple[str, str]]]:
    """Professions and savoir-faire present in the directory (for the search form's lists),
    cached until the next import."""
    last = DirectoryImport.objects.filter(result="success").values_list("pk", flat=True).first()
    key = f"annuaire:choices:{last}"
    choices = cache.get(key)
    if choices is None:
        professions = (
            DirectoryEntry.objects.filter(bal_type="PER")
            .exclude(profession_code="")
            .values_list("profession_code", "profession_label")
            .distinct()
            .order_by("profession_label")
        )
        specialties = (
            DirectoryEntry.objects.exclude(specialty_code="")
            .values_list("specialty_code", "specialty_label")
            .distinct()
            .order_by("specialty_label")
        )
        choices = {"professions": list(professions), "specialties": list(specialties)}
        cache.set(key, choices, 3600)
    return choices


def directory_entry(address: str) -> DirectoryEntry | None:
    return DirectoryEntry.objects.filter(address=address.strip().lower()).first()
