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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Case, F, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Collate

from annuaire.extraction import norm
from annuaire.models import DirectoryEntry, DirectoryImport, DirectoryName, entry_label

PAGE_SIZE = 20
SIMILARITY = 0.3  # pg_trgm's default threshold
SUGGESTIONS = 10
_DIGITS = re.compile(r"^\d+$")
_DEPARTMENT = re.compile(r"^(\d{2,3}|2[ab])$", re.IGNORECASE)


def _pg() -> bool:
    return connection.vendor == "postgresql"


def typos_tolerated() -> bool:
    """Whether a misspelt last name still finds its professional here: the trigram search
    needs PostgreSQL's pg_trgm; the embedded SQLite of `make run` matches prefixes only."""
    return _pg()


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


def _starting(qs: QuerySet[DirectoryEntry], column: str, value: str) -> QuerySet[DirectoryEntry]:
    """Rows whose ``column`` starts with ``value`` (through the C-collation index on PG)."""
    if _pg():
        alias = f"{column}_c"
        return qs.alias(**{alias: Collate(F(column), "C")}).filter(
            **{f"{alias}__startswith": value}
        )
    return qs.filter(**{f"{column}__startswith": value})


def _equal(qs: QuerySet[DirectoryEntry], column: str, value: str) -> QuerySet[DirectoryEntry]:
    if _pg():
        alias = f"{column}_c"
        return qs.alias(**{alias: Collate(F(column), "C")}).filter(**{alias: value})
    return qs.filter(**{column: value})


def _stem(word: str) -> str:
    """The first letters a typo rarely touches: where typo-tolerant matching starts from."""
    return word[:3] if len(word) >= 6 else word[:2]


def _contains_all(qs: QuerySet[DirectoryEntry], tokens: list[str]) -> QuerySet[DirectoryEntry]:
    for token in tokens:
        qs = qs.filter(search_norm__contains=token)
    return qs


def _close_names(wanted: str, limit: int = 10) -> list[str]:
    """Last names spelt close to ``wanted`` (pg_trgm similarity), best first, among the
    distinct names sharing its first letters (DirectoryName): a few hundred names to score,
    not thousands of rows. Empty on SQLite."""
    if not _pg() or len(wanted) < 3:
        return []
    names = connection.ops.quote_name(DirectoryName._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT name FROM (SELECT (name COLLATE "C") AS name FROM {names} '  # noqa: S608
            '  WHERE (name COLLATE "C") LIKE %s'
            ") n WHERE similarity(name, %s) > %s "
            "ORDER BY similarity(name, %s) DESC, name LIMIT %s",
            [_stem(wanted) + "%", wanted, SIMILARITY, wanted, limit],
        )
        return [name for (name,) in cursor.fetchall()]


def _by_names(qs: QuerySet[DirectoryEntry], names: list[str]) -> QuerySet[DirectoryEntry]:
    """Rows of these last names, in the order of the list, then by first name."""
    rank = Case(
        *(When(name_norm=name, then=Value(i)) for i, name in enumerate(names)),
        default=Value(len(names)),
        output_field=IntegerField(),
    )
    if _pg():
        qs = qs.alias(name_norm_c=Collate(F("name_norm"), "C")).filter(name_norm_c__in=names)
    else:
        qs = qs.filter(name_norm__in=names)
    return qs.annotate(name_rank=rank).order_by("name_rank", "given_norm", "address")


# --- Autocomplete ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    address: str
    label: str  # "Dr Claire MARTIN" or "CENTRE HOSPITALIER DE LYON"
    detail: str  # "Médecin · Cardiologie · LYON" or "Secrétariat médical · LYON"
    bal_type: str


class _Row(NamedTuple):
    """A row of the autocomplete's statement (``SUGGEST_FIELDS``): what a suggestion shows,
    without a model instance (building one costs more than the HTML of its suggestion)."""

    address: str
    bal_type: str
    civility: str
    first_name: str
    last_name: str
    profession_label: str
    specialty_label: str
    town: str
    structure_name: str
    structure_sign: str
    service: str


def _suggestion(entry: DirectoryEntry | _Row) -> Suggestion:
    if entry.bal_type == "PER":
        parts = [entry.profession_label, entry.specialty_label, entry.town]
    else:
        parts = [entry.service, entry.town]
    detail = " · ".join(p for p in parts if p)
    return Suggestion(entry.address, entry_label(entry), detail, entry.bal_type)


SUGGEST_FIELDS = _Row._fields


def _splits(tokens: list[str]) -> list[tuple[str, str]]:
    """Ways to read the typed words as (last name, first name), longest last name first:
    "élodie le goff" -> ("elodie le goff", ""), ("le goff", "elodie"), ("elodie le", "goff")..."""
    tokens = tokens[:4]
    if len(tokens) == 1:
        return [(tokens[0], "")]
    out = {(" ".join(tokens), "")}
    for k in range(1, len(tokens)):
        head, tail = " ".join(tokens[:k]), " ".join(tokens[k:])
        out.update({(head, tail), (tail, head)})
    return sorted((s for s in out if len(s[0]) >= 3), key=lambda s: (-len(s[0]), s))


def directory_suggest(text: str, limit: int = SUGGESTIONS) -> list[Suggestion]:
    """The best ``limit`` BALs for what is being typed: an address prefix, a name (last or
    first name, in any order, typos tolerated on PostgreSQL) or a structure and service.

    In order, each step only when the ones before it found nothing: the names read as (last
    name, first name) in every split and a first name alone; then structures and services
    (every word in the name, service or town); then close spellings of the last name (a
    typo); then a last name and a word of the town. On PostgreSQL the steps are branches of two
    statements at most (``_suggest_sql``), each later branch gated by the earlier ones being
    empty, so that it is never run when not needed."""
    text = text.strip()
    if len(text) < 2:
        return []
    if "@" in text or ("." in text and " " not in text):
        tokens: list[str] = []
    else:
        tokens = norm(text).split()
        if not tokens:
            return []
    entries: Sequence[DirectoryEntry | _Row]
    if _pg():
        entries = _suggest_sql(text.lower(), tokens, limit)
    else:
        entries = _suggest_orm(text.lower(), tokens, limit)
    if entries and all(e.bal_type != "PER" for e in entries):
        return sorted((_suggestion(e) for e in entries), key=lambda s: (s.label, s.detail))
    return [_suggestion(e) for e in entries]


def _suggest_orm(text: str, tokens: list[str], limit: int) -> list[DirectoryEntry]:
    """``directory_suggest`` on SQLite (the embedded mode): one query a step, no typos."""
    base = DirectoryEntry.objects.only(*SUGGEST_FIELDS)
    found: dict[str, DirectoryEntry] = {}

    def take(qs: QuerySet[DirectoryEntry]) -> None:
        if len(found) >= limit:
            return
        for entry in qs[:limit]:
            found.setdefault(entry.address, entry)
            if len(found) >= limit:
                return

    if not tokens:
        take(_prefix(base, "address", text))
        return list(found.values())
    people = base.filter(bal_type="PER")
    for name, given in _splits(tokens):
        by_name = _prefix(people, "name_norm", name)
        take(_starting(by_name, "given_norm", given) if given else by_name)
    if len(tokens) == 1:
        take(_prefix(people, "given_norm", tokens[0]))
    longest = max(tokens, key=len)
    if not found and len(longest) >= 3:
        take(_contains_all(base.exclude(bal_type="PER"), tokens).order_by())
    if not found and len(tokens) > 1 and len(longest) >= 3:
        others = [t for t in tokens if t != longest]
        take(_contains_all(_prefix(people, "name_norm", longest), others))
    return list(found.values())


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _like_contains(value: str) -> str:
    return "%" + _like_prefix(value)


def _suggest_sql(text: str, tokens: list[str], limit: int) -> list[_Row]:
    """``directory_suggest`` on PostgreSQL in at most two statements. Each step is a CTE of at
    most ``limit`` rows read in index order (C collation) and stopped there; a fallback CTE
    carries ``NOT EXISTS`` on the ones before it, an uncorrelated condition PostgreSQL
    evaluates once before its scan (a one-time filter). The first statement holds the names
    (and a first name alone), which fill the list for most texts; the fallbacks (structures,
    typos, a name and a town) go in a second statement sent only when the first found nothing:
    parsing and planning them cost more than running the first step (issue 21). Rows come back
    ordered by step, then by each step's own order."""
    table = connection.ops.quote_name(DirectoryEntry._meta.db_table)
    name_table = connection.ops.quote_name(DirectoryName._meta.db_table)
    fields = ", ".join(connection.ops.quote_name(f) for f in SUGGEST_FIELDS)
    name_c, given_c = '(name_norm COLLATE "C")', '(given_norm COLLATE "C")'
    empty_c = "''::text COLLATE \"C\""

    def branch(
        params: list[str | float],
        step: int,
        keys: tuple[str, str],
        where: str,
        args: Sequence[str],
        order: str,
    ) -> str:
        params.extend(args)
        return (
            f"(SELECT {step} AS step, {keys[0]} AS k1, {keys[1]} AS k2, {fields} "  # noqa: S608 (our names)
            f"FROM {table} WHERE {where} ORDER BY {order} LIMIT {int(limit)})"
        )

    def gated(where: str, gates: list[str]) -> str:
        return " AND ".join([where, *(f"NOT EXISTS (SELECT 1 FROM {g})" for g in gates)])  # noqa: S608

    first: list[str] = []  # the first statement's CTEs, then the fallbacks'
    first_params: list[str | float] = []
    later: list[str] = []
    params: list[str | float] = []
    if not tokens:  # an address being typed
        addr_c = '(address COLLATE "C")'
        first.append(
            "s0 AS MATERIALIZED "
            + branch(
                first_params, 0, (addr_c, empty_c), f"{addr_c} LIKE %s", [_like_prefix(text)],
                addr_c,
            )
        )  # fmt: skip
    else:
        splits = _splits(tokens)
        names: list[str] = []
        for i, (name, given) in enumerate(splits):  # (last, first) in either order: one index
            where, args = f"bal_type = 'PER' AND {name_c} LIKE %s", [_like_prefix(name)]
            if given:
                where, args = f"{where} AND {given_c} LIKE %s", [*args, _like_prefix(given)]
            names.append(
                branch(first_params, i, (name_c, given_c), where, args, f"{name_c}, {given_c}")
            )
        first.append("s0 AS MATERIALIZED (" + " UNION ALL ".join(names) + ")")
        longest = max(tokens, key=len)
        if len(tokens) == 1:  # a first name alone, when the last names left room
            first.append(
                "g0 AS MATERIALIZED "  # noqa: S608 (our names, counts and a bound LIKE)
                + branch(
                    first_params, len(splits), (given_c, empty_c),
                    f"bal_type = 'PER' AND {given_c} LIKE %s AND "  # noqa: S608
                    f"(SELECT count(DISTINCT address) FROM s0) < {int(limit)}",
                    [_like_prefix(tokens[0])], given_c,
                )
            )  # fmt: skip
        # The fallbacks run only when the first statement found nothing: their gates name only
        # the fallbacks before them.
        gates: list[str] = []
        if len(longest) >= 3:
            # Structures and services (ORG/APP): every word in the name, service or town (the
            # partial trigram index); any ten, sorted by name once fetched.
            words = " AND ".join("search_norm LIKE %s" for _ in tokens)
            later.append(
                "s1 AS MATERIALIZED "
                + branch(
                    params, 100, (empty_c, empty_c), f"bal_type <> 'PER' AND {words}",
                    [_like_contains(t) for t in tokens], "1",
                )
            )  # fmt: skip
            gates.append("s1")
        typos = [(n, g) for n, g in splits if len(n) >= 4][:2]
        for j, (name, given) in enumerate(typos):
            # A typo in the last name: the distinct names sharing its first letters (the few
            # hundred rows of DirectoryName), scored by trigram similarity, the five closest,
            # best first; then their people in first-name order.
            close = gated('(name COLLATE "C") LIKE %s', gates)
            later.append(
                f"c{j} AS MATERIALIZED (SELECT name, row_number() OVER (ORDER BY "  # noqa: S608
                f'similarity(name, %s) DESC, name) AS rank FROM (SELECT (name COLLATE "C") '
                f"AS name FROM {name_table} WHERE {close}) n "
                f"WHERE similarity(name, %s) > %s ORDER BY similarity(name, %s) DESC, name LIMIT 5)"
            )
            params.extend([name, _like_prefix(_stem(name)), name, SIMILARITY, name])
            where, args = f"bal_type = 'PER' AND {name_c} = c{j}.name", []
            if given:
                where, args = f"{where} AND {given_c} LIKE %s", [_like_prefix(given)]
            rows = branch(params, 0, (given_c, empty_c), where, args, given_c)
            later.append(
                f"t{j} AS MATERIALIZED (SELECT {200 + 10 * j} + c{j}.rank AS step, r.k1, r.k2, "  # noqa: S608
                f"{', '.join('r.' + f for f in fields.split(', '))} "
                f"FROM c{j} CROSS JOIN LATERAL {rows} r)"
            )
        gates += [f"t{j}" for j in range(len(typos))]
        if len(tokens) > 1 and len(longest) >= 3:  # a name and a word of the town...
            others = [t for t in tokens if t != longest]
            words = "".join(" AND search_norm LIKE %s" for _ in others)
            later.append(
                "s3 AS MATERIALIZED "
                + branch(
                    params, 300, (name_c, given_c),
                    gated(f"bal_type = 'PER' AND {name_c} LIKE %s{words}", gates),
                    [_like_prefix(longest), *(_like_contains(t) for t in others)], name_c,
                )
            )  # fmt: skip
    found: dict[str, _Row] = {}
    for ctes, values in ((first, first_params), (later, params)):
        if found or not ctes:
            break
        steps = [c.split(" ", 1)[0] for c in ctes if not c.startswith("c")]
        union = " UNION ALL ".join(f"SELECT * FROM {n}" for n in steps)  # noqa: S608
        sql = f"WITH {', '.join(ctes)} SELECT * FROM ({union}) found ORDER BY step, k1, k2"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, values)
            rows = cursor.fetchall()
        for row in rows:  # (step, k1, k2, *SUGGEST_FIELDS): address first
            if row[3] not in found:
                found[row[3]] = _Row._make(row[3:])
                if len(found) >= limit:
                    break
    return list(found.values())


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
        # The name typed, names starting with it, then close spellings (typos), in this order.
        starting = list(
            _starting(qs, "name_norm", wanted)
            .order_by()
            .values_list("name_norm", flat=True)
            .distinct()[:50]
        )
        starting.sort(key=lambda name: (name != wanted, name))
        names = starting + [n for n in _close_names(wanted) if n not in starting]
        return Paginator(_by_names(qs, names), PAGE_SIZE).get_page(page)
    return Paginator(qs.order_by(*order), PAGE_SIZE).get_page(page)


def _clean(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """One option per code, never a blank label, never the same label twice: the extraction
    spells a code's label in several ways across rows (spaces, case) or leaves it empty."""
    labels: dict[str, str] = {}
    for code, label in pairs:
        label = " ".join((label or "").split())
        if code and label and code not in labels:
            labels[code] = label
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label.casefold()] = seen.get(label.casefold(), 0) + 1
    options = [
        (code, f"{label} ({code})" if seen[label.casefold()] > 1 else label)
        for code, label in labels.items()
    ]
    return sorted(options, key=lambda option: norm(option[1]))


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
        choices = {"professions": _clean(professions), "specialties": _clean(specialties)}
        cache.set(key, choices, 3600)
    return choices


def directory_entry(address: str) -> DirectoryEntry | None:
    return DirectoryEntry.objects.filter(address=address.strip().lower()).first()
