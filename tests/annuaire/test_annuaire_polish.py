"""The annuaire page's polish (issue 19): profession lists without blank labels or repeats,
an empty state that says « Aucun résultat », a count otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from annuaire.extraction import COLUMNS
from annuaire.search import directory_choices
from annuaire.services import directory_import
from tests.annuaire.test_directory_search import LYON, REIMS, per
from tests.factories import make_professional

pytestmark = pytest.mark.django_db

ROWS = [
    per("a.martin@medecin.mssante.fr", "MARTIN", "Anne", "10", "Médecin", REIMS),
    per("b.durand@medecin.mssante.fr", "DURAND", "Bruno", "10", "Médecin ", LYON),  # a space
    per("c.petit@infirmier.mssante.fr", "PETIT", "Chloé", "60", "", REIMS),  # no label here
    per("d.roux@infirmier.mssante.fr", "ROUX", "Denis", "60", "Infirmier", LYON),
    per("e.blanc@x.mssante.fr", "BLANC", "Emma", "99", "", REIMS),  # never labelled
    per("f.noir@dentiste.mssante.fr", "NOIR", "Félix", "40", "Chirurgien-dentiste", REIMS),
    per("g.vert@dentiste.mssante.fr", "VERT", "Gaëlle", "41", "Chirurgien-dentiste", LYON),
    per("h.gris@sf.mssante.fr", "GRIS", "Hugo", "50", "Éducateur spécialisé", LYON),
]


@pytest.fixture
def directory(tmp_path: Path) -> None:
    path = tmp_path / "Extraction_Correspondance_MSSante_202612010300.txt"
    lines = ["|".join(COLUMNS)]
    for values in ROWS:
        full = dict.fromkeys(COLUMNS, "")
        full.update(values)
        lines.append("|".join(full[c] for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert directory_import(path=path).added == len(ROWS)


@pytest.mark.usefixtures("directory")
def test_profession_lists_have_no_blank_label_and_no_repeat() -> None:
    assert directory_choices()["professions"] == [
        ("40", "Chirurgien-dentiste (40)"),
        ("41", "Chirurgien-dentiste (41)"),
        ("50", "Éducateur spécialisé"),  # with the E's, not after Z
        ("60", "Infirmier"),
        ("10", "Médecin"),
    ]


@pytest.mark.usefixtures("directory")
def test_the_annuaire_page_says_aucun_resultat_or_counts() -> None:
    client = Client()
    client.force_login(make_professional())
    page = client.get("/annuaire/", {"nom": "Zyxwvutsr"}).content.decode()
    assert "Aucun résultat" in page
    assert "0 adresse" not in page
    page = client.get("/annuaire/", {"nom": "martin"}).content.decode()
    assert "1 adresse trouvée" in page and "Aucun résultat" not in page
    form = client.get("/annuaire/").content.decode()
    assert '<option value="99">' not in form  # the code nobody labelled
    assert form.count(">Médecin</option>") == 1


@pytest.mark.usefixtures("directory")
def test_the_promise_about_typos_matches_the_backend_in_use(monkeypatch) -> None:
    client = Client()
    client.force_login(make_professional())

    # PostgreSQL (here): a misspelt name finds its professional, and the page says so.
    page = client.get("/annuaire/", {"nom": "Martinn"}).content.decode()
    assert "une faute de frappe dans le nom est tolérée" in page
    assert "1 adresse trouvée" in page

    # The embedded SQLite of `make run` matches prefixes only: the page must not promise more.
    monkeypatch.setattr("annuaire.views.typos_tolerated", lambda: False)
    page = client.get("/annuaire/").content.decode()
    assert "faute de frappe" not in page
    assert "le nom doit être écrit sans faute" in page
