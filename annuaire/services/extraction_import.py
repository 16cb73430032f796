"""The import of the national MSSanté extraction into the directory (issue 6).

Three steps, so that searches never see a half-loaded directory:

1. the file is streamed (never whole in memory) into the scratch table ``DirectoryStaging``:
   COPY on PostgreSQL, batched inserts on SQLite (the embedded default); bad rows are counted
   with their line number and reason, a file that cannot be read at all stops here;
2. duplicates (the real file has ~170 addresses on several lines) keep their first line, and a
   file that would empty most of the directory (a truncated download) is refused;
3. one transaction merges the scratch table into ``DirectoryEntry`` by address: the diff
   (added, updated with the fields that changed, removed) is recorded for the console, then
   applied. Readers see the old directory until the commit, the new one after.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annuaire.extraction import (
    DERIVED,
    FIELDS,
    NAME_RE,
    ExtractionError,
    Reject,
    Row,
    Same,
    hash_key,
    open_extraction,
    rows,
)
from annuaire.models import (
    DirectoryChange,
    DirectoryEntry,
    DirectoryImport,
    DirectoryName,
    DirectoryStaging,
)
from annuaire.selectors import recipient_cache_clear

logger = logging.getLogger(__name__)

COLUMNS = (*FIELDS, *DERIVED)
MAX_REJECTS_KEPT = 1000
MAX_DETAILED_UPDATES = 50_000
LOCK_ID = 0x4D535341  # pg_advisory_lock key of the import ("MSSA")
_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

Progress = Callable[[int], None]


def _staging_table() -> str:
    return connection.ops.quote_name(DirectoryStaging._meta.db_table)


def _entry_table() -> str:
    return connection.ops.quote_name(DirectoryEntry._meta.db_table)


def _names_refresh() -> None:
    """Rewrite DirectoryName (the distinct last names) from the directory, inside the import's
    transaction: readers see the old names with the old directory, the new with the new."""
    names = connection.ops.quote_name(DirectoryName._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {names}")  # noqa: S608 (our table names)
        cursor.execute(
            f"INSERT INTO {names} (name) SELECT DISTINCT name_norm FROM {_entry_table()} "  # noqa: S608
            "WHERE name_norm <> ''"
        )


def _staging_clear() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {_staging_table()}")
        else:
            cursor.execute(f"DELETE FROM {_staging_table()}")  # noqa: S608 (our table name)


class _Loader:
    """Streams parsed lines into a table (COPY on PostgreSQL, batched inserts on SQLite),
    counting rows, rejects and duplicate addresses (the first line of an address wins)."""

    def __init__(self, run: DirectoryImport, known: set[int] | None = None) -> None:
        self.run = run
        self.rejects: list[dict[str, Any]] = []
        self.full = 0  # rows parsed in full (new or changed lines)
        # Hashes of the lines in force; what is left after reading is what vanished.
        self.known: set[int] = known if known is not None else set()
        self._seen: set[int] = set()

    def _keep(self, line: int, reason: str) -> None:
        if len(self.rejects) < MAX_REJECTS_KEPT:
            self.rejects.append({"line": line, "reason": reason})

    def clean(self, parsed: Iterable[Row | Same | Reject]) -> Iterator[Row]:
        run = self.run
        for item in parsed:
            if isinstance(item, Reject):
                run.rejected += 1
                self._keep(item.line, item.reason)
                continue
            run.rows_read += 1
            line, address = (
                (item.line, item.address)
                if isinstance(item, Same)
                else (item[0], item[1]["address"])
            )
            key = hash(address)
            if key in self._seen:
                run.duplicates += 1
                self._keep(line, "adresse déjà présente plus haut dans le fichier (ligne ignorée)")
                continue
            self._seen.add(key)
            if isinstance(item, Same):
                self.known.discard(item.key)
                continue
            self.full += 1
            yield item

    def load(
        self,
        parsed: Iterable[Row | Same | Reject],
        model: type[DirectoryEntry] | type[DirectoryStaging],
    ) -> None:
        staging = model is DirectoryStaging
        if connection.vendor == "postgresql":
            self._copy(parsed, model, staging)
        else:
            self._insert(parsed, model, staging)
        self.run.rejects = sorted(self.rejects, key=lambda r: r["line"])

    def _copy(self, parsed: Iterable[Row | Same | Reject], model: type[Any], staging: bool) -> None:
        q = connection.ops.quote_name
        table = q(model._meta.db_table)
        names = ("line", *COLUMNS) if staging else COLUMNS
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(q(n) for n in names)}) FROM STDIN") as copy,
        ):
            buffer: list[str] = []
            for line, row in self.clean(parsed):
                values = [row[c] for c in COLUMNS]
                text = "\t".join(values)
                if "\\" in text or "\r" in text or text.count("\t") != len(values) - 1:
                    text = "\t".join(v.translate(_COPY_ESCAPE) for v in values)
                buffer.append(f"{line}\t{text}\n" if staging else f"{text}\n")
                if len(buffer) >= 2000:
                    copy.write("".join(buffer))
                    buffer.clear()
            if buffer:
                copy.write("".join(buffer))
        with connection.cursor() as cursor:
            # Fresh statistics, or the planner takes 540,000 rows for a handful (nested loops).
            cursor.execute(f"ANALYZE {table}")

    def _insert(
        self, parsed: Iterable[Row | Same | Reject], model: type[Any], staging: bool
    ) -> None:
        batch: list[Any] = []
        for line, row in self.clean(parsed):
            batch.append(model(line=line, **row) if staging else model(**row))
            if len(batch) >= 2000:
                model.objects.bulk_create(batch)
                batch.clear()
        if batch:
            model.objects.bulk_create(batch)


def _plausible(run: DirectoryImport, current: int, force: bool) -> None:
    """Refuse what looks like a broken file rather than empty the directory in force."""
    total = run.rows_read + run.rejected
    if run.rows_read == 0:
        raise ExtractionError(
            "Aucune ligne valide dans le fichier : l'annuaire en vigueur est conservé."
        )
    if run.rejected > total // 2:
        raise ExtractionError(
            f"{run.rejected} lignes rejetées sur {total} : le fichier est inexploitable, "
            "l'annuaire en vigueur est conservé."
        )
    kept = run.rows_read - run.duplicates
    ratio = settings.ANNUAIRE_MIN_KEEP_PERCENT / 100
    if not force and current >= 1000 and kept < current * ratio:
        raise ExtractionError(
            f"Le fichier ne contient que {kept} BAL contre {current} dans l'annuaire en vigueur "
            f"(moins de {settings.ANNUAIRE_MIN_KEEP_PERCENT} %) : fichier probablement tronqué, "
            "import refusé. Relancez avec --force si cette baisse est attendue."
        )


# The search indexes of migration 0003 (PostgreSQL). A bulk load drops and rebuilds them: one
# index build is several times faster than 540,000 trigram insertions.
PG_SEARCH_INDEXES = {
    "annuaire_entry_pp": "(pp_national_id)",
    "annuaire_entry_structure": "(structure_id)",
    "annuaire_entry_postal": "(postal_code)",
    "annuaire_entry_name_prefix": '((name_norm COLLATE "C"), (given_norm COLLATE "C"))',
    "annuaire_entry_given_prefix": '((given_norm COLLATE "C"))',
    "annuaire_entry_address_prefix": '((address COLLATE "C"))',
    "annuaire_entry_name_trgm": "USING gin (name_norm gin_trgm_ops)",
    "annuaire_entry_search_trgm": "USING gin (search_norm gin_trgm_ops) WHERE bal_type <> 'PER'",
}
BULK_SHARE = 0.3  # more changed rows than this share of the directory: rebuild the indexes


def _bulk(current: int, changed: int) -> bool:
    return connection.vendor == "postgresql" and changed > current * BULK_SHARE


@contextmanager
def _indexes_rebuilt(enabled: bool) -> Iterator[None]:
    """Inside the merge transaction: without the search indexes while rows go in, rebuilt
    before the commit. Readers wait for the commit (DROP INDEX locks the table) rather than
    see a half-loaded directory; this happens on the first import and on huge changes only."""
    if not enabled:
        yield
        return
    table = _entry_table()
    with connection.cursor() as cursor:
        for name in PG_SEARCH_INDEXES:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for name, definition in PG_SEARCH_INDEXES.items():
            if definition.startswith("USING"):
                using, _, rest = definition.partition(" (")
                cursor.execute(f"CREATE INDEX {name} ON {table} {using} ({rest}")
            else:
                cursor.execute(f"CREATE INDEX {name} ON {table} {definition}")
        cursor.execute(f"ANALYZE {table}")


def _vanished(keys: set[int]) -> list[tuple[int, str]]:
    """(id, address) of the directory rows whose line is no longer in the file."""
    if not keys:
        return []
    prefixes = [f"{k & 0xFFFFFFFFFFFFFFFF:016x}" for k in keys]
    entry = _entry_table()
    found: list[tuple[int, str]] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT id, address FROM {entry} WHERE left(row_hash, 16) = ANY(%s)",  # noqa: S608
                [prefixes],
            )
            return list(cursor.fetchall())
        for i in range(0, len(prefixes), 500):
            chunk = prefixes[i : i + 500]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                f"SELECT id, address FROM {entry} WHERE substr(row_hash, 1, 16) IN ({marks})",  # noqa: S608
                chunk,
            )
            found.extend(cursor.fetchall())
    return found


def _merge(run: DirectoryImport, vanished: list[tuple[int, str]]) -> None:
    """Apply the scratch table (new and changed lines only) and the vanished lines; record
    each change for the console."""
    staging, entry = _staging_table(), _entry_table()
    q = connection.ops.quote_name
    insert_columns = ", ".join(q(c) for c in COLUMNS)
    select_columns = ", ".join(f"s.{q(c)}" for c in COLUMNS)
    assignments = ", ".join(f"{q(c)} = s.{q(c)}" for c in COLUMNS)
    new = f"NOT EXISTS (SELECT 1 FROM {entry} e WHERE e.address = s.address)"  # noqa: S608
    staged = set(DirectoryStaging.objects.values_list("address", flat=True))
    removed = [(pk, address) for pk, address in vanished if address not in staged]
    changes = [
        DirectoryChange(run=run, address=address, kind=DirectoryChange.Kind.REMOVED)
        for _pk, address in removed
    ]
    changes += [
        DirectoryChange(run=run, address=address, kind=DirectoryChange.Kind.ADDED)
        for address in DirectoryStaging.objects.filter(
            ~Exists(DirectoryEntry.objects.filter(address=OuterRef("address")))
        ).values_list("address", flat=True)
    ]
    DirectoryChange.objects.bulk_create(changes, batch_size=2000)
    _record_updates(run)
    ids = [pk for pk, _address in removed]
    with connection.cursor() as cursor:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"DELETE FROM {entry} WHERE id IN ({marks})", chunk)  # noqa: S608
    run.removed = len(ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {entry} SET {assignments} FROM {staging} s "  # noqa: S608
            f"WHERE s.address = {entry}.address AND s.row_hash <> {entry}.row_hash"
        )
        run.updated = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {entry} ({insert_columns}) "  # noqa: S608
            f"SELECT {select_columns} FROM {staging} s WHERE {new}"
        )
        run.added = cursor.rowcount
    _names_refresh()


def _record_updates(run: DirectoryImport) -> None:
    """The changed fields of each updated BAL (the console shows before -> after)."""
    staging, entry = _staging_table(), _entry_table()
    q = connection.ops.quote_name
    pairs = ", ".join(f"e.{q(c)}, s.{q(c)}" for c in FIELDS)
    changes: list[DirectoryChange] = []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.address, {pairs} FROM {entry} e JOIN {staging} s "  # noqa: S608
            "ON s.address = e.address WHERE s.row_hash <> e.row_hash ORDER BY e.address"
        )
        while chunk := cursor.fetchmany(2000):
            for address, *values in chunk:
                fields: dict[str, list[str]] = {}
                if len(changes) < MAX_DETAILED_UPDATES:
                    for i, name in enumerate(FIELDS):
                        before, after = values[2 * i], values[2 * i + 1]
                        if before != after:
                            fields[name] = [before, after]
                changes.append(
                    DirectoryChange(
                        run=run, address=address, kind=DirectoryChange.Kind.UPDATED, fields=fields
                    )
                )
    DirectoryChange.objects.bulk_create(changes, batch_size=2000)


@contextmanager
def _exclusive() -> Iterator[None]:
    """One import at a time (the scratch table is shared)."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_ID])
        (locked,) = cursor.fetchone()
    if not locked:
        raise ExtractionError("Un import de l'annuaire est déjà en cours : réessayez plus tard.")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_ID])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def directory_import(
    *,
    path: Path,
    source: str = "",
    force: bool = False,
    progress: Progress | None = None,
) -> DirectoryImport:
    """Import one extraction file (`.txt` or the published `.zip`). Returns the recorded run;
    raises ExtractionError (after recording the failed run) when the file cannot be used, in
    which case the directory in force is untouched."""
    stamp = NAME_RE.match(path.name)
    run = DirectoryImport.objects.create(
        source=(source or str(path))[:500], file_stamp=stamp.group(1) if stamp else ""
    )
    started = time.monotonic()
    try:
        with _exclusive():
            run.sha256 = _sha256(path)
            current = DirectoryEntry.objects.count()
            run.initial = current == 0
            if run.initial and connection.vendor == "postgresql":
                _load_initial(path, run, force, progress)
            else:
                _load_and_merge(path, run, current, force, progress)
    except ExtractionError as exc:
        run.result = DirectoryImport.Result.FAILURE
        run.error = exc.user_message
        _finish(run, started)
        logger.warning("annuaire import refused: %s", exc.user_message)
        raise
    changed = run.added or run.updated or run.removed
    run.result = DirectoryImport.Result.SUCCESS if changed else DirectoryImport.Result.UNCHANGED
    _finish(run, started)
    recipient_cache_clear()
    logger.info("annuaire import: %s in %d ms", run.result, run.duration_ms)
    return run


def _load_initial(path: Path, run: DirectoryImport, force: bool, progress: Progress | None) -> None:
    """First load on PostgreSQL: straight into the (empty) directory by COPY, indexes built
    once at the end, all in one transaction (nothing to diff against)."""
    loader = _Loader(run)
    with transaction.atomic(), _indexes_rebuilt(True):
        with open_extraction(path) as (stream, _size):
            loader.load(rows(stream, progress=progress), DirectoryEntry)
        _plausible(run, 0, force)
        run.added = run.rows_read - run.duplicates
        _names_refresh()
    _vacuum()


def _vacuum() -> None:
    """After a bulk load: the visibility map lets searches read names from the indexes alone
    (autovacuum would get there later). Not possible inside a caller's transaction."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        names = connection.ops.quote_name(DirectoryName._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {_entry_table()}, {names}")


def _known_hashes() -> set[int]:
    """The 64-bit keys (extraction.hash_key) of every line in force."""
    if connection.vendor != "postgresql":
        return {hash_key(h) for h in DirectoryEntry.objects.values_list("row_hash", flat=True)}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ('x' || left(row_hash, 16))::bit(64)::bigint "  # noqa: S608
            f"FROM {_entry_table()}"
        )
        return {k for (k,) in cursor.fetchall()}


def _load_and_merge(
    path: Path, run: DirectoryImport, current: int, force: bool, progress: Progress | None
) -> None:
    """Next loads: lines whose hash is already in force are only checked off; the others are
    parsed into the scratch table, merged with the vanished lines in one transaction."""
    t0 = time.monotonic()
    known = _known_hashes()
    loader = _Loader(run, known)
    _staging_clear()
    try:
        t1 = time.monotonic()
        # A file refused half-way rolls its scratch rows back (a savepoint inside a caller's
        # transaction), so that the clean-up below still runs.
        with transaction.atomic(), open_extraction(path) as (stream, _size):
            loader.load(rows(stream, known, progress), DirectoryStaging)
        t2 = time.monotonic()
        _plausible(run, current, force)
        vanished = _vanished(loader.known)
        loader.known.clear()
        bulk = _bulk(current, loader.full)
        with transaction.atomic(), _indexes_rebuilt(bulk):
            _merge(run, vanished)
        if bulk:
            _vacuum()
        logger.info(
            "annuaire import: hashes %.1fs, read+staged %.1fs (%d parsed), merged %.1fs",
            t1 - t0,
            t2 - t1,
            loader.full,
            time.monotonic() - t2,
        )
    finally:
        _staging_clear()


def _finish(run: DirectoryImport, started: float) -> None:
    run.finished_at = timezone.now()
    run.duration_ms = int((time.monotonic() - started) * 1000)
    run.save()


def directory_import_url(*, url: str, force: bool = False) -> DirectoryImport:
    """Download the extraction (HTTPS, IGC-Santé chain from ANNUAIRE_CA_BUNDLE) to a temporary
    file, streamed, then import it."""
    if not url.startswith("https://"):
        raise ExtractionError("L'extraction se télécharge en HTTPS uniquement.")
    verify: str | bool = settings.ANNUAIRE_CA_BUNDLE or True
    tmp_dir = Path(settings.VAR_DIR) / "annuaire"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    try:
        with requests.get(url, stream=True, timeout=60, verify=verify) as response:
            response.raise_for_status()
            match = re.search(
                r"filename=\"?([^\";]+)", response.headers.get("Content-Disposition", "")
            )
            name = match.group(1) if match else "extraction-correspondance-mssante.txt"
            with tempfile.TemporaryDirectory(dir=tmp_dir) as work:
                target = Path(work) / Path(name).name
                limit, written = settings.ANNUAIRE_MAX_SIZE_MB * 1024 * 1024, 0
                with target.open("wb") as out:
                    for chunk in response.iter_content(1 << 20):
                        written += len(chunk)
                        if written > limit:  # the text, zipped or not, is never bigger
                            raise OSError(
                                f"plus de {settings.ANNUAIRE_MAX_SIZE_MB} Mo (ANNUAIRE_MAX_SIZE_MB)"
                            )
                        out.write(chunk)
                return directory_import(path=target, source=url, force=force)
    except (requests.RequestException, OSError) as exc:  # OSError: too big, or disk full
        error = ExtractionError(
            f"Téléchargement de l'extraction impossible : {exc}. "
            "L'annuaire en vigueur est conservé."
        )
        DirectoryImport.objects.create(
            source=url[:500],
            result=DirectoryImport.Result.FAILURE,
            error=error.user_message,
            finished_at=timezone.now(),
        )
        raise error from exc
