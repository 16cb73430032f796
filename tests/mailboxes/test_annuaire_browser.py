"""The annuaire in Chromium: searching a person and writing to them, and the compose
autocomplete adding an address to « À » with the verdict saying whose it is."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from annuaire.extraction import COLUMNS
from annuaire.models import WhitelistEntry, WhitelistVersion
from annuaire.services import directory_import
from tests.factories import make_mailbox, make_professional, make_structure
from tests.mailboxes.conftest import wait_provisioned

pytestmark = pytest.mark.django_db(transaction=True)

HELENE = {
    "Type de BAL": "PER",
    "Adresse BAL": "helene.lefevre@medecin.mssante.fr",
    "Identification nationale PP": "810100000001",
    "Civilité d'exercice": "DR",
    "Nom d'exercice": "LEFÈVRE",
    "Prénom d'exercice": "Hélène",
    "Code Profession": "10",
    "Libellé Profession": "Médecin",
    "L6LIGNEACHEMINEMENT structure BAL": "51100 REIMS",
    "Code postal structure BAL": "51100",
}


def test_search_write_and_autocomplete(dovecot, live_server, page: Page, tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    full = dict.fromkeys(COLUMNS, "")
    full.update(HELENE)
    path.write_text("|".join(COLUMNS) + "\n" + "|".join(full[c] for c in COLUMNS) + "\n")
    directory_import(path=path)
    version = WhitelistVersion.objects.create(
        generated_at="2026-11-01T00:00:00Z",
        source="t",
        sha256="0" * 64,
        signer_subject="t",
        is_current=True,
    )
    WhitelistEntry.objects.create(
        version=version, domain="medecin.mssante.fr", dn="CN=x", dn_key="cn=x"
    )
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    wait_provisioned(box.address)
    client = Client()
    client.force_login(doctor)
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )

    page.goto(f"{live_server.url}/annuaire/")
    page.get_by_label("Nom", exact=True).fill("lefevre")
    page.get_by_role("button", name="Rechercher").click()
    expect(page.get_by_text("Dr Hélène LEFÈVRE")).to_be_visible()
    page.get_by_role("link", name="Écrire").click()
    expect(page.get_by_label("À", exact=True)).to_have_value("helene.lefevre@medecin.mssante.fr")
    expect(page.get_by_text("Dr Hélène LEFÈVRE — Médecin")).to_be_visible()

    page.goto(f"{live_server.url}/bal/{box.public_id}/ecrire/")
    page.get_by_label("Ajouter un destinataire de l'annuaire").press_sequentially("hélène lef")
    suggestion = page.locator(".suggestion", has_text="helene.lefevre@medecin.mssante.fr")
    expect(suggestion).to_be_visible()
    suggestion.click()
    expect(page.get_by_label("À", exact=True)).to_have_value("helene.lefevre@medecin.mssante.fr")
    expect(page.get_by_text("Dr Hélène LEFÈVRE — Médecin")).to_be_visible()
