"""Searching the national directory like annuaire.sante.fr: accents, case, apostrophes and
typos do not matter; the compose autocomplete finds people, addresses and services; each
recipient gets a verdict with a French reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from annuaire.extraction import COLUMNS
from annuaire.models import WhitelistEntry, WhitelistVersion
from annuaire.search import DirectoryQuery, directory_search, directory_suggest
from annuaire.selectors import NOT_IN_DIRECTORY, recipient_check
from annuaire.services import directory_import
from tests.factories import make_professional

pytestmark = pytest.mark.django_db

REIMS = {
    "Raison Sociale structure BAL": "CENTRE HOSPITALIER DE REIMS",
    "Type identifiant structure": "1",
    "Identification Structure": "510000029",
    "L6LIGNEACHEMINEMENT structure BAL": "51100 REIMS CEDEX",
    "Code postal structure BAL": "51100",
    "Département structure BAL": "51",
}
LYON = {
    "Raison Sociale structure BAL": "CLINIQUE DU PARC",
    "L6LIGNEACHEMINEMENT structure BAL": "69003 LYON",
    "Code postal structure BAL": "69003",
    "Département structure BAL": "69",
}


def per(
    address: str, last: str, first: str, code: str, label: str, place: dict[str, str], **more: str
) -> dict[str, str]:
    national = f"8{abs(hash(address)) % 10**11:011d}"
    return {
        "Type de BAL": "PER",
        "Adresse BAL": address,
        "Type Identifiant PP": "8",
        "Identifiant PP": national[1:],
        "Identification nationale PP": national,
        "Civilité d'exercice": "DR" if code == "10" else "",
        "Nom d'exercice": last,
        "Prénom d'exercice": first,
        "Code Profession": code,
        "Libellé Profession": label,
        **place,
        **more,
    }


ROWS = [
    per(
        "helene.lefevre@medecin.mssante.fr",
        "LEFÈVRE",
        "Hélène",
        "10",
        "Médecin",
        REIMS,
        **{
            "Code savoir-faire": "SM04",
            "Libellé savoir-faire": "Cardiologie et maladies vasculaires",
        },
    ),
    per("marc.lefebvre@infirmier.mssante.fr", "LEFEBVRE", "Marc", "60", "Infirmier", LYON),
    per(
        "aissatou.ndiaye@ch-reims.mssante.fr",
        "N'DIAYE",
        "Aïssatou",
        "10",
        "Médecin",
        REIMS,
        **{"Identification nationale PP": "810101234567", "Identifiant PP": "10101234567"},
    ),
    per("jean.dupont@medecin.mssante.fr", "DUPONT", "Jean", "10", "Médecin", LYON),
    per(
        "jeanne.dupont-moreau@sage-femme.mssante.fr",
        "DUPONT-MOREAU",
        "Jeanne",
        "50",
        "Sage-Femme",
        LYON,
    ),
    per(
        "marie-claire.saint-martin@medecin.mssante.fr",
        "SAINT-MARTIN",
        "Marie-Claire",
        "10",
        "Médecin",
        REIMS,
    ),
    {
        "Type de BAL": "ORG",
        "Adresse BAL": "secretariat.cardio@ch-reims.mssante.fr",
        "Service de rattachement": "Secrétariat de cardiologie",
        **REIMS,
    },
    {
        "Type de BAL": "ORG",
        "Adresse BAL": "urgences@ch-reims.mssante.fr",
        "Service de rattachement": "Urgences adultes",
        **REIMS,
    },
]


@pytest.fixture
def directory(tmp_path: Path) -> None:
    path = tmp_path / "Extraction_Correspondance_MSSante_202611300300.txt"
    lines = ["|".join(COLUMNS)]
    for values in ROWS:
        full = dict.fromkeys(COLUMNS, "")
        full.update(values)
        lines.append("|".join(full[c] for c in COLUMNS))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert directory_import(path=path).added == len(ROWS)


def addresses(**criteria: str) -> list[str]:
    page = directory_search(DirectoryQuery(**criteria))
    return [e.address for e in page.object_list]


@pytest.mark.usefixtures("directory")
class TestSearch:
    def test_accents_and_case_do_not_matter_and_the_exact_name_comes_first(self) -> None:
        for typed in ("lefevre", "LEFÈVRE", "Lefèvre"):
            found = addresses(last_name=typed)
            assert found[0] == "helene.lefevre@medecin.mssante.fr"
            assert "marc.lefebvre@infirmier.mssante.fr" in found  # a close spelling, after

    def test_a_typo_in_the_name_still_finds_the_person(self) -> None:
        assert addresses(last_name="lefevrre")[0] == "helene.lefevre@medecin.mssante.fr"
        assert "jean.dupont@medecin.mssante.fr" in addresses(last_name="dupond")

    def test_apostrophes_and_hyphens_are_ignored(self) -> None:
        assert addresses(last_name="ndiaye") == ["aissatou.ndiaye@ch-reims.mssante.fr"]
        assert addresses(last_name="N'Diaye") == ["aissatou.ndiaye@ch-reims.mssante.fr"]
        assert addresses(last_name="saint martin", first_name="marie claire") == [
            "marie-claire.saint-martin@medecin.mssante.fr"
        ]

    def test_place_profession_specialty_and_national_id(self) -> None:
        reims = {
            "helene.lefevre@medecin.mssante.fr",
            "aissatou.ndiaye@ch-reims.mssante.fr",
            "marie-claire.saint-martin@medecin.mssante.fr",
        }
        assert set(addresses(place="51")) == reims
        assert set(addresses(place="51100")) == reims
        assert set(addresses(place="Reims")) == reims
        assert addresses(profession="60") == ["marc.lefebvre@infirmier.mssante.fr"]
        assert addresses(specialty="SM04") == ["helene.lefevre@medecin.mssante.fr"]
        assert addresses(identifier="810101234567") == ["aissatou.ndiaye@ch-reims.mssante.fr"]
        assert addresses(identifier="10101234567") == ["aissatou.ndiaye@ch-reims.mssante.fr"]

    def test_structures_by_name_or_finess_with_their_org_bals(self) -> None:
        expected = ["secretariat.cardio@ch-reims.mssante.fr", "urgences@ch-reims.mssante.fr"]
        assert addresses(kind="structure", structure="hospitalier reims") == expected
        assert addresses(kind="structure", identifier="510000029") == expected


@pytest.mark.usefixtures("directory")
class TestAutocomplete:
    def suggest(self, text: str) -> list[str]:
        return [s.address for s in directory_suggest(text)]

    def test_a_name_in_any_order_and_a_prefix(self) -> None:
        assert self.suggest("jean dup")[0] == "jean.dupont@medecin.mssante.fr"
        assert self.suggest("dupont jean")[0] == "jean.dupont@medecin.mssante.fr"
        assert set(self.suggest("dupont")) == {
            "jean.dupont@medecin.mssante.fr",
            "jeanne.dupont-moreau@sage-femme.mssante.fr",
        }
        assert self.suggest("Hélè")[0] == "helene.lefevre@medecin.mssante.fr"

    def test_an_address_prefix(self) -> None:
        assert self.suggest("aissatou.nd") == ["aissatou.ndiaye@ch-reims.mssante.fr"]

    def test_a_service_of_a_structure(self) -> None:
        assert self.suggest("cardio reims")[0] == "secretariat.cardio@ch-reims.mssante.fr"
        assert "urgences@ch-reims.mssante.fr" in self.suggest("urgences")

    def test_a_typo(self) -> None:
        assert "helene.lefevre@medecin.mssante.fr" in self.suggest("lefevbre")

    def test_the_suggestion_says_who_it_is(self) -> None:
        [first, *_] = directory_suggest("lefèvre hélène")
        assert first.label == "Dr Hélène LEFÈVRE"
        assert first.detail == "Médecin · Cardiologie et maladies vasculaires · REIMS"

    def test_one_letter_suggests_nothing(self) -> None:
        assert self.suggest("d") == []

    def test_a_later_step_only_when_the_earlier_ones_found_nothing(self) -> None:
        # « lefe » starts two names: those people only, not the close spellings of it.
        assert set(self.suggest("lefe")) == {
            "helene.lefevre@medecin.mssante.fr",
            "marc.lefebvre@infirmier.mssante.fr",
        }
        # A typo whose letters also start a real name: the real name, not the close spelling.
        assert self.suggest("dupont-m") == ["jeanne.dupont-moreau@sage-femme.mssante.fr"]
        # A name and a word of the town.
        assert self.suggest("ndiaye reims") == ["aissatou.ndiaye@ch-reims.mssante.fr"]

    def test_wildcards_typed_in_an_address_are_letters(self) -> None:
        assert self.suggest("jean.dupont@") == ["jean.dupont@medecin.mssante.fr"]
        assert self.suggest("jean_dupont@") == []
        assert self.suggest("%@medecin") == []

    @pytest.mark.parametrize(
        ("text", "statements"),
        [("jean dup", 1), ("aissatou.nd", 1), ("lefevbre", 2), ("cardio reims", 2)],
    )
    def test_one_round_trip_when_the_names_find_someone_two_at_most(
        self, text: str, statements: int, django_assert_num_queries
    ) -> None:
        # The fallbacks (structures, typos, a name and a town) are a second statement, sent
        # only when the first found nothing: never one query per step.
        with django_assert_num_queries(statements):
            assert self.suggest(text)


@pytest.mark.usefixtures("directory")
def test_the_annuaire_page_and_its_write_button() -> None:
    client = Client()
    client.force_login(make_professional())

    page = client.get("/annuaire/", {"nom": "lefevre"}).content.decode()

    assert "Hélène" in page and "helene.lefevre@medecin.mssante.fr" in page
    assert "/bal/ecrire/?a=helene.lefevre%40medecin.mssante.fr" in page
    assert "2 adresses trouvées" in page
    fragment = client.get("/annuaire/suggestions/", {"q": "ndiaye"}, HTTP_HX_REQUEST="true")
    assert 'data-address="aissatou.ndiaye@ch-reims.mssante.fr"' in fragment.content.decode()


def test_the_annuaire_is_for_signed_in_professionals_only() -> None:
    assert Client().get("/annuaire/").status_code == 302
    assert Client().get("/annuaire/suggestions/", {"q": "dupont"}).status_code == 302


# --- Recipient verdicts ------------------------------------------------------------------------


@pytest.fixture
def trust_space(directory: None) -> None:
    version = WhitelistVersion.objects.create(
        generated_at="2026-11-01T00:00:00Z",
        source="t",
        sha256="0" * 64,
        signer_subject="t",
        is_current=True,
    )
    for domain in ("medecin.mssante.fr", "ch-reims.mssante.fr", "patient.mssante.fr"):
        WhitelistEntry.objects.create(version=version, domain=domain, dn="CN=x", dn_key="cn=x")


@pytest.mark.usefixtures("trust_space")
class TestRecipientVerdict:
    def test_a_listed_address_of_the_directory_says_whose_it_is(self) -> None:
        verdict = recipient_check("Helene.Lefevre@medecin.mssante.fr")
        assert (verdict.ok, verdict.bal_type, verdict.holder) == (
            True,
            "PER",
            "Dr Hélène LEFÈVRE — Médecin",
        )
        org = recipient_check("urgences@ch-reims.mssante.fr")
        assert org.holder == "CENTRE HOSPITALIER DE REIMS — Urgences adultes"

    def test_an_address_of_a_listed_domain_the_directory_does_not_know_is_accepted_with_a_notice(
        self,
    ) -> None:
        verdict = recipient_check("logiciel-noreply@ch-reims.mssante.fr")
        assert (verdict.ok, verdict.notice, verdict.holder) == (True, NOT_IN_DIRECTORY, "")

    def test_a_domain_outside_the_trust_space_is_refused_with_its_reason(self) -> None:
        verdict = recipient_check(
            "marc.lefebvre@infirmier.mssante.fr"
        )  # in the directory, not listed
        assert not verdict.ok
        assert verdict.reason.startswith(
            "infirmier.mssante.fr est hors espace de confiance MSSanté"
        )

    def test_a_patient_address_with_a_valid_ins(self) -> None:
        verdict = recipient_check("279035121518989@patient.mssante.fr")
        assert verdict.ok and verdict.patient is not None
        assert verdict.patient.summary().startswith("Une femme, née en mars 1979")

    def test_a_patient_address_with_a_wrong_key_is_refused(self) -> None:
        verdict = recipient_check("279035121518988@patient.mssante.fr")
        assert not verdict.ok and verdict.reason.startswith("Adresse patient invalide")

    def test_an_import_replaces_the_cached_verdicts(self, tmp_path: Path) -> None:
        assert recipient_check("helene.lefevre@medecin.mssante.fr").holder
        path = tmp_path / "next.txt"
        kept = [r for r in ROWS if r["Adresse BAL"] != "helene.lefevre@medecin.mssante.fr"]
        lines = ["|".join(COLUMNS)]
        for values in kept:
            full = dict.fromkeys(COLUMNS, "")
            full.update(values)
            lines.append("|".join(full[c] for c in COLUMNS))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

        assert directory_import(path=path).removed == 1

        verdict = recipient_check("helene.lefevre@medecin.mssante.fr")
        assert (verdict.ok, verdict.holder, verdict.notice) == (True, "", NOT_IN_DIRECTORY)


def test_the_autocomplete_fragment_escapes_what_the_directory_says() -> None:
    """Names and services come from a national file: shown as text, never as markup."""
    from annuaire.presenters import suggestions_html
    from annuaire.selectors import Suggestion

    html = suggestions_html(
        [Suggestion('x"y@a.fr', "<script>alert(1)</script>", "Service <b>", "ORG")], "xy"
    )
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-address="x&quot;y@a.fr"' in html and "Service &lt;b&gt;" in html
    assert '<span class="bal-kind bal-kind--org">ORG</span>' in html
    assert "Aucune adresse" in suggestions_html([], "xy") and suggestions_html([], "x") == ""
