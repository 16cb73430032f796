"""The national MSSanté extraction (`Extraction_Correspondance_MSSante_<stamp>.zip|.txt`).

Facts: ../shared/reference/annuaire-psc-ins.md §A1. UTF-8, `|`-separated, one header line,
31 columns, one line per BAL, no quoting. Parsed **by header name**: a renamed or missing column
stops the import with its name; an added column is ignored.

This module only reads: it streams the file line by line (never whole in memory) and yields
clean rows or rejects with their line number. Loading is `annuaire.services.extraction_import`.

What it reads is bounded before anything is loaded: the text (the `.txt`, or the one inside the
`.zip`, by the size its archive declares; zipfile never inflates past it) must fit in
ANNUAIRE_MAX_SIZE_MB, an archive must not inflate more than MAX_RATIO times, and no line may
pass MAX_LINE octets. A zip bomb or an endless line stops the import; the directory stays.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from mssante_portal.errors import PortalError

# Header name -> our field. Order of the published file; parsing never relies on it.
COLUMNS: dict[str, str] = {
    "Type de BAL": "bal_type",
    "Adresse BAL": "address",
    "Type Identifiant PP": "pp_id_type",
    "Identifiant PP": "pp_id",
    "Identification nationale PP": "pp_national_id",
    "Type identifiant structure": "structure_id_type",
    "Identification Structure": "structure_id",
    "Service de rattachement": "service",
    "Civilité d'exercice": "civility",
    "Nom d'exercice": "last_name",
    "Prénom d'exercice": "first_name",
    "Catégorie profession": "category_code",
    "Libellé de catégorie profession": "category_label",
    "Code Profession": "profession_code",
    "Libellé Profession": "profession_label",
    "Code savoir-faire": "specialty_code",
    "Libellé savoir-faire": "specialty_label",
    "Dématérialisation": "paperless",
    "Raison Sociale structure BAL": "structure_name",
    "Enseigne commerciale structure BAL": "structure_sign",
    "L2COMPLEMENTLOCALISATION structure BAL": "addr_l2",
    "L3COMPLEMENTDISTRIBUTION structure BAL": "addr_l3",
    "L4NUMEROVOIE structure BAL": "addr_number",
    "L4COMPLEMENTNUMEROVOIE structure BAL": "addr_number_ext",
    "NL4TYPEVOIE structure BAL": "addr_street_type",
    "L4LIBELLEVOIE structure BAL": "addr_street",
    "L5LIEUDITMENTION structure BAL": "addr_l5",
    "L6LIGNEACHEMINEMENT structure BAL": "addr_l6",
    "Code postal structure BAL": "postal_code",
    "Département structure BAL": "department",
    "Pays structure BAL": "country",
}
FIELDS: tuple[str, ...] = tuple(COLUMNS.values())
# Fields we derive for search; stored next to the published ones.
DERIVED: tuple[str, ...] = ("domain", "town", "name_norm", "given_norm", "search_norm", "row_hash")
BAL_TYPES = frozenset({"PER", "ORG", "APP", "CAB"})
MAX_FIELD = 500  # longer than any published value; a longer one is a broken row
# 31 fields of MAX_FIELD at most; the published lines are ~170 octets.
MAX_LINE = 65536
# Inflated size over compressed size: ~4.4 for the published archive (89 MB from 20 MB), over
# 1000 for a zip bomb.
MAX_RATIO = 50
NAME_RE = re.compile(r"^Extraction_Correspondance_MSSante_(\d{12})\.(txt|zip)$")


class ExtractionError(PortalError):
    """The file cannot be imported at all (foreign header, truncated, unreadable): the
    directory in force stays."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="annuaire.bad_file", http_status=400, permanent=True)


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str


_DROP = dict.fromkeys(map(ord, "'\u2019`\u00b4"), None)  # apostrophes, typographic too
_LIGATURES = str.maketrans(
    {"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o", "Ø": "O"}
)
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
# A strict dot-atom address: what the file holds. Anything else goes through Django's validator.
_PLAIN_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)


def ascii_fold(value: str) -> str:
    """Accents removed, ligatures spelt out (« Œ » -> « OE »), anything else non-ASCII
    dropped; case kept. Shared by the search form and the BAL naming rule."""
    if value.isascii():
        return value
    value = unicodedata.normalize("NFKD", value.translate(_LIGATURES))
    return value.encode("ascii", "ignore").decode("ascii")


@lru_cache(maxsize=100_000)
def norm(value: str) -> str:
    """Search form of a name: accents removed, lower case, apostrophes dropped, hyphens and
    other punctuation as spaces. ``N'DIAYE`` -> ``ndiaye``, ``Jean-Marc`` -> ``jean marc``."""
    return " ".join(_NOT_ALNUM.sub(" ", ascii_fold(value).lower().translate(_DROP)).split())


@lru_cache(maxsize=50_000)
def _town(l6: str, postal_code: str) -> str:
    """The town out of the AFNOR L6 line ``75013 PARIS`` / ``13008 MARSEILLE CEDEX 08``."""
    town = l6.strip()
    if postal_code and town.startswith(postal_code):
        town = town[len(postal_code) :].strip()
    return re.sub(r"\s+CEDEX(\s+\d+)?$", "", town, flags=re.IGNORECASE)


def derive(row: dict[str, str]) -> dict[str, str]:
    """Add the search columns (the content hash is the line's, set by the reader)."""
    address = row["address"]
    row["domain"] = address.rpartition("@")[2]
    row["town"] = _town(row["addr_l6"], row["postal_code"])
    row["name_norm"] = norm(row["last_name"])
    row["given_norm"] = norm(row["first_name"])
    parts = (
        row["name_norm"],
        row["given_norm"],
        norm(row["profession_label"]),
        norm(row["specialty_label"]),
        norm(row["structure_name"]),
        norm(row["structure_sign"]),
        norm(row["service"]),
        norm(row["town"]),
        norm(address.partition("@")[0]),
    )
    row["search_norm"] = " ".join(p for p in parts if p)
    return row


def _header(line: bytes) -> list[str]:
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ExtractionError("L'en-tête du fichier n'est pas en UTF-8.") from exc
    names = [n.strip() for n in text.split("|")]
    if names and names[-1] == "":
        names.pop()  # a trailing `|`, as in the PS_LibreAcces files
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        if len(missing) == len(COLUMNS):
            raise ExtractionError(
                "Ce fichier n'est pas une extraction des BAL MSSanté de l'Annuaire Santé : "
                "aucune des colonnes attendues n'est présente dans l'en-tête."
            )
        listed = ", ".join(f"« {c} »" for c in missing)
        raise ExtractionError(
            f"Le format de l'extraction a changé : colonne(s) absente(s) de l'en-tête : {listed}. "
            "L'annuaire en vigueur est conservé."
        )
    return names


Row = tuple[int, dict[str, str]]  # line number, values over FIELDS + DERIVED


@dataclass(frozen=True)
class Same:
    """A line identical to one already in the directory (same hash): not parsed again."""

    line: int
    address: str
    key: int


def hash_key(row_hash: str) -> int:
    """The signed 64-bit form of a line hash (its first 16 hex digits), kept in memory during a
    re-import (540,000 of them) and computed the same way by PostgreSQL."""
    return int.from_bytes(bytes.fromhex(row_hash[:16]), "big", signed=True)


def rows(
    stream: IO[bytes],
    known: set[int] | frozenset[int] = frozenset(),
    progress: Callable[[int], None] | None = None,
) -> Iterator[Row | Same | Reject]:
    """Clean rows, unchanged lines (hash in ``known``) and rejects, in file order, with their
    line numbers (the header is line 1); ``progress`` is told the octets read, now and then.
    Raises ExtractionError for a file that cannot be read at all (empty, foreign header,
    truncated, a line longer than MAX_LINE)."""
    first = stream.readline(MAX_LINE)
    if not first:
        raise ExtractionError("Le fichier est vide.")
    _bounded(first, 1)
    names = _header(first)
    width = len(names)
    index = [names.index(column) for column in COLUMNS]
    at = names.index("Adresse BAL")
    number = 1
    pending: bytes | None = None
    consumed, reported = len(first), 0
    # Bounded reads (never a whole endless line in memory), as fast as iterating the stream.
    for raw in iter(partial(stream.readline, MAX_LINE), b""):
        size = len(raw)
        if size == MAX_LINE:  # a full read may have stopped inside the line
            _bounded(raw, number + 1)
        consumed += size
        if pending is not None:
            yield _row(pending, number, width, index, at, known)
        number += 1
        pending = raw
        if progress is not None and not number & 0x3FFF:
            progress(consumed - reported)
            reported = consumed
    if progress is not None and consumed > reported:
        progress(consumed - reported)
    if pending is not None:
        if not pending.endswith(b"\n") and pending.count(b"|") + 1 < width:
            raise ExtractionError(
                f"Le fichier est tronqué (ligne {number} incomplète) : "
                "l'annuaire en vigueur est conservé."
            )
        yield _row(pending, number, width, index, at, known)


def _bounded(raw: bytes, number: int) -> None:
    """Refuse the file at a line longer than MAX_LINE (read no further into it)."""
    if len(raw) >= MAX_LINE and not raw.endswith(b"\n"):
        raise ExtractionError(
            f"La ligne {number} dépasse {MAX_LINE} octets : ce n'est pas une extraction, "
            "l'annuaire en vigueur est conservé."
        )


def _too_big(size: int) -> None:
    limit = settings.ANNUAIRE_MAX_SIZE_MB
    if size > limit * 1024 * 1024:
        raise ExtractionError(
            f"L'extraction ({size / 1048576:.0f} Mo) dépasse la taille maximale de {limit} Mo "
            "(ANNUAIRE_MAX_SIZE_MB) : l'annuaire en vigueur est conservé."
        )


def _row(
    raw: bytes, number: int, width: int, index: list[int], at: int, known: set[int] | frozenset[int]
) -> Row | Same | Reject:
    # The content hash of a line (what the diff compares): md5 of its bytes without the line
    # ending. Cheap enough to skip parsing the ~99 % of lines unchanged since the last import.
    digest = hashlib.md5(raw.rstrip(b"\r\n"), usedforsecurity=False).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    if key in known:
        address = raw.split(b"|", at + 1)[at].decode("utf-8", "replace").strip().lower()
        return Same(number, address, key)
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return Reject(number, "caractères invalides (pas de l'UTF-8)")
    if not text.strip():
        return Reject(number, "ligne vide")
    values = text.split("|")
    if len(values) == width + 1 and values[-1] == "":
        values.pop()
    if len(values) != width:
        return Reject(number, f"{len(values)} colonnes au lieu de {width}")
    if max(map(len, values)) > MAX_FIELD:
        return Reject(number, "valeur trop longue")
    if " |" in text or "| " in text or text != text.strip():
        values = [v.strip() for v in values]
    row = dict(zip(FIELDS, [values[i] for i in index], strict=True))
    if row["bal_type"] not in BAL_TYPES:
        return Reject(number, f"type de BAL inconnu « {row['bal_type'][:20]} »")
    address = row["address"].lower()
    if not _PLAIN_EMAIL.match(address):
        try:
            validate_email(address)
        except ValidationError:
            return Reject(number, f"adresse invalide « {row['address'][:100]} »")
    row["address"] = address
    row["row_hash"] = digest.hex()
    return number, derive(row)


@contextmanager
def open_extraction(path: Path) -> Iterator[tuple[IO[bytes], int]]:
    """The extraction's text as a binary stream, and its size in bytes (for progress): the
    `.txt` itself or the one `.txt` inside the published `.zip`."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.infolist() if m.filename.endswith(".txt")]
                if len(members) != 1:
                    raise ExtractionError(
                        "L'archive doit contenir exactement un fichier .txt d'extraction."
                    )
                # Sizes as the archive's directory declares them: zipfile inflates no more
                # than file_size (the rest fails its CRC check, BadZipFile below).
                info = members[0]
                _too_big(info.file_size)
                if info.file_size > MAX_RATIO * max(info.compress_size, 1):
                    ratio = info.file_size / max(info.compress_size, 1)
                    raise ExtractionError(
                        f"Archive suspecte, taux de compression anormal ({ratio:.0f} pour 1, "
                        f"{MAX_RATIO} au plus) : l'annuaire en vigueur est conservé."
                    )
                with archive.open(info) as member:
                    yield io.BufferedReader(member, 1 << 20), info.file_size  # type: ignore[type-var]
        else:
            with path.open("rb", buffering=1 << 20) as handle:
                magic = handle.read(4)
                handle.seek(0)
                if magic == b"PK\x03\x04":
                    raise ExtractionError(
                        "Archive tronquée (répertoire central absent) : "
                        "l'annuaire en vigueur est conservé."
                    )
                size = path.stat().st_size
                _too_big(size)
                yield handle, size
    except zipfile.BadZipFile as exc:  # a CRC or size mismatch: a truncated or damaged archive
        raise ExtractionError(
            f"Archive endommagée ou tronquée ({exc}) : l'annuaire en vigueur est conservé."
        ) from exc
    except OSError as exc:
        raise ExtractionError(f"Lecture impossible de {path.name} : {exc.strerror or exc}") from exc
