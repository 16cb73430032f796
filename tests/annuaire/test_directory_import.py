"""The national MSSanté extraction: parsed by header name, bad rows reported with their line,
bad files refused with the directory in force kept, the diff between two files recorded."""

from __future__ import annotations

import http.server
import ssl
import threading
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annuaire.extraction import COLUMNS, ExtractionError, Reject, rows
from annuaire.models import DirectoryChange, DirectoryEntry, DirectoryImport, DirectoryName
from annuaire.services import directory_import
from devtools import annuaire_gen
from devtools.pki import make_test_pki
from tests.factories import SHARED

pytestmark = pytest.mark.django_db

SAMPLES = SHARED / "samples" / "annuaire"
HEADER_SAMPLE = SAMPLES / "Extraction_Correspondance_MSSante__HEADER_31cols_reconstructed.txt"
PS_SAMPLE = SAMPLES / "PS_LibreAcces_Personne_activite__HEADER_56cols_reconstructed.txt"

NDIAYE = {
    "Type de BAL": "PER",
    "Adresse BAL": "Aissatou.NDIAYE@Medecin.mssante.fr",
    "Type Identifiant PP": "8",
    "Identifiant PP": "10101234567",
    "Identification nationale PP": "810101234567",
    "Civilité d'exercice": "DR",
    "Nom d'exercice": "N'DIAYE",
    "Prénom d'exercice": "Aïssatou",
    "Code Profession": "10",
    "Libellé Profession": "Médecin",
    "Code savoir-faire": "SM04",
    "Libellé savoir-faire": "Cardiologie et maladies vasculaires",
    "Raison Sociale structure BAL": "CENTRE HOSPITALIER DE REIMS",
    "L6LIGNEACHEMINEMENT structure BAL": "51100 REIMS CEDEX",
    "Code postal structure BAL": "51100",
    "Département structure BAL": "51",
    "Pays structure BAL": "France",
}


def line(**values: str) -> str:
    full = dict.fromkeys(COLUMNS, "")
    full.update(values)
    return "|".join(full[c] for c in COLUMNS) + "\n"


def extraction(
    tmp_path: Path, body: str, name: str = "Extraction_Correspondance_MSSante_202611300300.txt"
) -> Path:
    path = tmp_path / name
    path.write_text(
        HEADER_SAMPLE.read_text(encoding="utf-8").rstrip("\n") + "\n" + body, encoding="utf-8"
    )
    return path


def test_the_published_header_parses_by_name_whatever_the_column_order(tmp_path: Path) -> None:
    header = HEADER_SAMPLE.read_text(encoding="utf-8").rstrip("\n").split("|")
    assert len(header) == 31
    reordered = list(reversed(header))
    path = tmp_path / "x.txt"
    row = dict.fromkeys(COLUMNS, "")
    row.update(NDIAYE)
    path.write_text("|".join(reordered) + "|\n" + "|".join(row[c] for c in reordered) + "|\n")

    [item] = list(rows(path.open("rb")))
    assert isinstance(item, tuple)
    number, parsed = item

    assert number == 2
    assert parsed["address"] == "aissatou.ndiaye@medecin.mssante.fr"
    assert parsed["last_name"] == "N'DIAYE"
    assert parsed["name_norm"] == "ndiaye"
    assert parsed["given_norm"] == "aissatou"
    assert parsed["town"] == "REIMS"
    assert parsed["domain"] == "medecin.mssante.fr"


def test_an_import_loads_every_row_and_records_the_run(tmp_path: Path) -> None:
    path = annuaire_gen.write(
        tmp_path / "Extraction_Correspondance_MSSante_202611300300.txt", 300, extra=[NDIAYE]
    )

    run = directory_import(path=path)

    assert run.result == "success"
    assert (run.rows_read, run.added, run.rejected, run.initial) == (301, 301, 0, True)
    assert run.file_stamp == "202611300300"
    assert DirectoryEntry.objects.count() == 301
    entry = DirectoryEntry.objects.get(address="aissatou.ndiaye@medecin.mssante.fr")
    assert (entry.bal_type, entry.pp_national_id, entry.specialty_code) == (
        "PER",
        "810101234567",
        "SM04",
    )
    assert entry.display_name == "DR Aïssatou N'DIAYE"


def test_the_published_zip_imports_like_the_text(tmp_path: Path) -> None:
    text = annuaire_gen.write(tmp_path / "Extraction_Correspondance_MSSante_202611300300.txt", 50)
    archive = tmp_path / "Extraction_Correspondance_MSSante_202611300300.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(text, text.name)

    run = directory_import(path=archive)

    assert (run.result, run.added, run.file_stamp) == ("success", 50, "202611300300")


def test_bad_rows_are_reported_with_their_line_and_the_rest_is_imported(tmp_path: Path) -> None:
    good = line(**NDIAYE)
    body = (
        good
        + "PER|trop|peu|de|colonnes\n"  # line 3
        + line(**{**NDIAYE, "Adresse BAL": "pas-une-adresse"})  # line 4
        + line(**{**NDIAYE, "Type de BAL": "XYZ", "Adresse BAL": "a@b.mssante.fr"})  # line 5
        + "\n"  # line 6
        + line(**{**NDIAYE, "Adresse BAL": "c@d.mssante.fr"})  # line 7, good
        + "".join(line(**{**NDIAYE, "Adresse BAL": f"bon{i}@d.mssante.fr"}) for i in range(6))
    )
    path = extraction(tmp_path, body)
    raw = path.read_bytes() + line(
        **{**NDIAYE, "Nom d'exercice": "X", "Adresse BAL": "e@f.mssante.fr"}
    ).encode().replace(b"X", b"\xff\xfe")
    path.write_bytes(raw)  # line 14: broken UTF-8

    run = directory_import(path=path)

    assert (run.rows_read, run.added, run.rejected) == (8, 8, 5)
    assert run.rejects == [
        {"line": 3, "reason": "5 colonnes au lieu de 31"},
        {"line": 4, "reason": "adresse invalide « pas-une-adresse »"},
        {"line": 5, "reason": "type de BAL inconnu « XYZ »"},
        {"line": 6, "reason": "ligne vide"},
        {"line": 14, "reason": "caractères invalides (pas de l'UTF-8)"},
    ]
    assert set(DirectoryEntry.objects.values_list("address", flat=True)) == {
        "aissatou.ndiaye@medecin.mssante.fr",
        "c@d.mssante.fr",
        *(f"bon{i}@d.mssante.fr" for i in range(6)),
    }


def test_a_file_of_mostly_bad_rows_is_refused(tmp_path: Path) -> None:
    body = line(**NDIAYE) + "PER|x\n" * 3

    with pytest.raises(ExtractionError, match="3 lignes rejetées sur 4"):
        directory_import(path=extraction(tmp_path, body))
    assert not DirectoryEntry.objects.exists()


def test_an_address_on_two_lines_keeps_its_first_line(tmp_path: Path) -> None:
    body = line(**NDIAYE) + line(**{**NDIAYE, "Nom d'exercice": "AUTRE"})

    run = directory_import(path=extraction(tmp_path, body))

    assert (run.rows_read, run.added, run.duplicates) == (2, 1, 1)
    assert run.rejects[0]["line"] == 3
    assert DirectoryEntry.objects.get().last_name == "N'DIAYE"


@pytest.fixture
def in_force(tmp_path: Path) -> DirectoryImport:
    return directory_import(path=annuaire_gen.write(tmp_path / "base.txt", 1200, extra=[NDIAYE]))


def _unchanged(before: set[str]) -> None:
    assert set(DirectoryEntry.objects.values_list("address", flat=True)) == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2].rsplit(b"|", 3)[0], "Le fichier est tronqué"),
        (lambda b: b"", "Le fichier est vide."),
        (
            lambda b: PS_SAMPLE.read_bytes() + b"8|1|2\n",
            "colonne(s) absente(s) de l'en-tête : « Type de BAL », « Adresse BAL »",
        ),
        (lambda b: b.replace(b"|Adresse BAL|", b"|Adresse messagerie|", 1), "« Adresse BAL »"),
        (lambda b: b"\x89PNG\r\n" + b"\x00" * 100, "L'en-tête du fichier n'est pas en UTF-8."),
    ],
    ids=["truncated", "empty", "foreign-header", "renamed-column", "binary"],
)
def test_a_file_that_cannot_be_read_is_refused_and_the_directory_stays(
    tmp_path: Path, in_force: DirectoryImport, damage, message: str
) -> None:
    before = set(DirectoryEntry.objects.values_list("address", flat=True))
    good = annuaire_gen.write(tmp_path / "next.txt", 1200, seed=9)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(damage(good.read_bytes()))

    with pytest.raises(ExtractionError) as refused:
        directory_import(path=bad)

    assert message in refused.value.user_message
    _unchanged(before)
    run = DirectoryImport.objects.first()
    assert run is not None and run.result == "failure" and message in run.error


def test_a_truncated_zip_is_refused(tmp_path: Path, in_force: DirectoryImport) -> None:
    before = set(DirectoryEntry.objects.values_list("address", flat=True))
    text = annuaire_gen.write(tmp_path / "next.txt", 1200, seed=9)
    archive = tmp_path / "next.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(text, text.name)
    archive.write_bytes(archive.read_bytes()[:5000])

    with pytest.raises(ExtractionError, match="Archive tronquée"):
        directory_import(path=archive)
    _unchanged(before)


def test_a_file_emptying_most_of_the_directory_needs_force(
    tmp_path: Path, in_force: DirectoryImport
) -> None:
    small = annuaire_gen.write(tmp_path / "small.txt", 100)
    before = set(DirectoryEntry.objects.values_list("address", flat=True))

    with pytest.raises(ExtractionError, match="probablement tronqué"):
        directory_import(path=small)
    _unchanged(before)

    run = directory_import(path=small, force=True)
    # Same seed: the small file is the first 100 generated rows of the directory in force.
    assert (run.added, run.updated, run.removed) == (0, 0, 1101)
    assert DirectoryEntry.objects.count() == 100


def test_the_next_day_file_records_its_diff_and_a_reimport_changes_nothing(tmp_path: Path) -> None:
    base = annuaire_gen.write(tmp_path / "base.txt", 1500)
    directory_import(path=base)
    changed = tmp_path / "next.txt"
    counts = annuaire_gen.mutate(base, changed, percent=5)

    run = directory_import(path=changed)

    assert (run.added, run.updated, run.removed) == (
        counts["added"],
        counts["changed"],
        counts["removed"],
    )
    assert run.initial is False
    kinds = dict(
        (kind, n)
        for kind, n in [
            (k, DirectoryChange.objects.filter(run=run, kind=k).count())
            for k in ("added", "updated", "removed")
        ]
    )
    assert kinds == {
        "added": counts["added"],
        "updated": counts["changed"],
        "removed": counts["removed"],
    }
    update = DirectoryChange.objects.filter(run=run, kind="updated").first()
    assert update is not None
    entry = DirectoryEntry.objects.get(address=update.address)
    assert update.fields["postal_code"][1] == entry.postal_code
    assert set(update.fields) <= {"postal_code", "department", "addr_l6", "addr_number"}
    assert DirectoryEntry.objects.count() == 1500 - counts["removed"] + counts["added"]

    again = directory_import(path=changed)

    assert (again.result, again.added, again.updated, again.removed) == ("unchanged", 0, 0, 0)
    assert not DirectoryChange.objects.filter(run=again).exists()


def test_each_import_leaves_the_distinct_last_names_the_typo_search_reads(tmp_path: Path) -> None:
    def names() -> set[str]:
        return set(DirectoryName.objects.values_list("name", flat=True))

    def in_force() -> set[str]:
        return set(DirectoryEntry.objects.exclude(name_norm="").values_list("name_norm", flat=True))

    base = annuaire_gen.write(tmp_path / "base.txt", 400)
    directory_import(path=base)
    assert names() and names() == in_force()
    changed = tmp_path / "next.txt"
    annuaire_gen.mutate(base, changed, percent=20)
    before = names()

    directory_import(path=changed)

    assert names() == in_force() != before


def test_the_command_reports_counts_and_refusals(tmp_path: Path, capsys) -> None:
    path = annuaire_gen.write(tmp_path / "Extraction_Correspondance_MSSante_202611300300.txt", 20)
    call_command("import_annuaire", str(path))
    assert "Annuaire importé" in capsys.readouterr().out

    with pytest.raises(CommandError, match="Import refusé : Le fichier est vide"):
        empty = tmp_path / "vide.txt"
        empty.write_bytes(b"")
        call_command("import_annuaire", str(empty))


def test_rows_yields_rejects_not_exceptions_for_bad_lines(tmp_path: Path) -> None:
    path = extraction(tmp_path, "PER|x\n" + line(**NDIAYE))
    parsed = list(rows(path.open("rb")))
    assert isinstance(parsed[0], Reject) and parsed[0].line == 2
    assert not isinstance(parsed[1], Reject)


# --- Hostile archives: zip bombs and endless lines ----------------------------------------


def _header() -> bytes:
    return HEADER_SAMPLE.read_bytes().rstrip(b"\n") + b"\n"


def _bomb_ratio(tmp_path: Path) -> Path:
    """30 MB of one repeated line inflating from ~30 kB (ratio ~1000)."""
    archive = tmp_path / "Extraction_Correspondance_MSSante_202612010300.zip"
    row = line(**NDIAYE).encode()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.txt", "w") as out:
        out.write(_header())
        for _ in range(30):
            out.write(row * (1_000_000 // len(row)))
    return archive


def _too_big(tmp_path: Path, suffix: str) -> Path:
    """A real-looking extraction (ratio ~4.5) of ~1.4 MB, over a 1 MB cap."""
    text = annuaire_gen.write(tmp_path / "big.txt", 6000, seed=9)
    if suffix == ".txt":
        return text
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(text, "big.txt")
    return archive


def _lying_sizes(tmp_path: Path) -> Path:
    """An archive whose directory says 2 kB for a member that inflates to 5 MB."""
    archive = tmp_path / "menteuse.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.txt", _header() + line(**NDIAYE).encode() * 30_000)
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local, central
        at = data.find(signature)
        data[at + offset : at + offset + 4] = (2048).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    return archive


def _long_line(tmp_path: Path, suffix: str) -> Path:
    """Good rows, then one 5 MB line (no line break in it), stored (ratio 1) or as text."""
    body = _header() + line(**NDIAYE).encode() + b"PER|" + b"A" * 5_000_000 + b"\n"
    if suffix == ".txt":
        path = tmp_path / "longue.txt"
        path.write_bytes(body)
        return path
    archive = tmp_path / "longue.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("longue.txt", body)
    return archive


def _long_header(tmp_path: Path) -> Path:
    path = tmp_path / "entete.txt"
    path.write_bytes(_header().rstrip(b"\n") + b"|" + b"x" * 2_000_000 + b"\n")
    return path


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_bomb_ratio, "taux de compression anormal"),
        (lambda tmp: _too_big(tmp, ".zip"), "dépasse la taille maximale de 1 Mo"),
        (lambda tmp: _too_big(tmp, ".txt"), "dépasse la taille maximale de 1 Mo"),
        (_lying_sizes, "Archive endommagée"),
        (lambda tmp: _long_line(tmp, ".zip"), "ligne 3 dépasse 65536 octets"),
        (lambda tmp: _long_line(tmp, ".txt"), "ligne 3 dépasse 65536 octets"),
        (_long_header, "ligne 1 dépasse 65536 octets"),
    ],
    ids=["ratio", "size-zip", "size-txt", "lying-sizes", "line-zip", "line-txt", "header"],
)
def test_a_zip_bomb_or_an_endless_line_is_refused_and_the_directory_stays(
    tmp_path: Path, in_force: DirectoryImport, settings, build, message: str
) -> None:
    settings.ANNUAIRE_MAX_SIZE_MB = 1 if "taille" in message else 1024
    before = set(DirectoryEntry.objects.values_list("address", flat=True))
    path = build(tmp_path)

    with pytest.raises(CommandError) as refused:
        call_command("import_annuaire", str(path))

    assert str(refused.value).startswith("Import refusé : ")
    assert message in str(refused.value)
    assert "l'annuaire en vigueur est conservé" in str(refused.value).lower()
    _unchanged(before)
    run = DirectoryImport.objects.first()
    assert run is not None and run.result == "failure" and message in run.error


def test_an_extraction_under_the_caps_imports(tmp_path: Path, settings) -> None:
    settings.ANNUAIRE_MAX_SIZE_MB = 1
    text = annuaire_gen.write(tmp_path / "Extraction_Correspondance_MSSante_202612010300.txt", 3000)
    archive = text.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(text, text.name)

    assert directory_import(path=archive).added == 3000


def test_a_download_bigger_than_the_cap_is_refused_and_the_directory_stays(
    tmp_path: Path, in_force: DirectoryImport, settings
) -> None:
    """The published URL answers with more than ANNUAIRE_MAX_SIZE_MB: the download stops there,
    over real HTTPS (test PKI), and nothing is imported."""
    pki = make_test_pki(tmp_path / "pki")
    settings.ANNUAIRE_MAX_SIZE_MB = 1
    settings.ANNUAIRE_CA_BUNDLE = str(pki["ca"].cert)
    settings.VAR_DIR = tmp_path
    sent: list[int] = []

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Disposition", 'attachment; filename="x.zip"')
            self.end_headers()
            chunk = b"PK" + b"\0" * 65534
            try:
                for _ in range(400):  # 26 MB if nobody stops reading
                    self.wfile.write(chunk)
                    sent.append(len(chunk))
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["gateway"].cert, pki["gateway"].key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    before = set(DirectoryEntry.objects.values_list("address", flat=True))
    try:
        with pytest.raises(CommandError, match="plus de 1 Mo") as refused:
            call_command("import_annuaire", "--url", f"https://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()

    assert "l'annuaire en vigueur est conservé" in str(refused.value).lower()
    _unchanged(before)
    assert sum(sent) < 20 * 1024 * 1024
    run = DirectoryImport.objects.first()
    assert run is not None and run.result == "failure" and "plus de 1 Mo" in run.error
