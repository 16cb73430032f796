"""French typography and small polish (issue 19): BAL kinds in words, « 1 message » and
« 2 messages », sizes in octets/Ko/Mo with a decimal comma, a delegate's « déléguée jusqu'au … »
badge, the annuaire's empty state."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape

import pytest
from django.template import Context, Template
from django.utils import timezone

from accounts.typography import elide_de, octets
from mailboxes.webmail.forms import attachments_too_large
from tests.factories import grant, make_mailbox, make_message
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.personas import client_for, make_cast

pytestmark = pytest.mark.django_db


def test_sizes_in_octets_ko_mo_with_a_decimal_comma() -> None:
    assert octets(0) == "0 octet"
    assert octets(1) == "1 octet"
    assert octets(340) == "340 octets"
    assert octets(1536) == "1,5\u00a0Ko"
    assert octets(12 * 1024 * 1024) == "12\u00a0Mo"
    assert octets(3 * 1024**3) == "3\u00a0Go"
    assert attachments_too_large(13_000_000).startswith("Pièces jointes : 12,4 Mo au total")


def test_bal_kinds_in_words_and_a_delegates_end_date(dovecot) -> None:
    cast = make_cast()
    until = timezone.make_aware(dt.datetime(2027, 1, 31, 23, 30), dt.UTC)  # 1 Feb in Paris
    cast.delegation.expires_at = until
    cast.delegation.save(update_fields=["expires_at"])
    wait_provisioned(cast.per.address, cast.soins.address)

    page = client_for(cast.doctor).get("/bal/").content.decode()
    assert ">personnelle</span>" in page and ">PER<" not in page
    assert "déléguée" not in page  # her own BAL

    page = client_for(cast.secretary).get("/bal/").content.decode()
    assert "déléguée jusqu'au 1 février 2027" in page  # in local time (Europe/Paris)

    page = client_for(cast.nurse).get("/bal/").content.decode()
    assert ">organisationnelle</span>" in page and ">ORG<" not in page

    console = client_for(cast.director).get(
        f"/console/{cast.structure.public_id}/bal/{cast.soins.public_id}/"
    )
    assert ">organisationnelle</span>" in console.content.decode()


def test_one_message_two_messages(dovecot) -> None:
    cast = make_cast()
    wait_provisioned(cast.per.address)
    client = client_for(cast.doctor)
    url = f"/bal/{cast.per.public_id}/?dossier=INBOX"
    deliver(cast.per.address, make_message(subject="Premier"))
    page = client.get(url).content.decode()
    assert re.search(r"<caption[^>]*>1 message</caption>", page)
    assert "1 message<" in page and "1 messages" not in page
    deliver(cast.per.address, make_message(subject="Second"))
    page = client.get(url).content.decode()
    assert re.search(r"<caption[^>]*>2 messages</caption>", page)
    assert re.search(r"\d+ octets|\d+(,\d)?\u00a0Ko", page)  # the size column, in French


def test_de_is_elided_before_a_vowel() -> None:
    assert elide_de("Claire MARTIN") == "de Claire MARTIN"
    assert elide_de("Aurélie LEROY") == "d'Aurélie LEROY"
    assert elide_de("Émilie") == "d'Émilie"
    assert elide_de("accueil@ehpad.mssante.fr") == "d'accueil@ehpad.mssante.fr"
    template = Template("{% load portal_fr %}Retirer l'accès {{ who|de }} ?")
    shown = unescape(template.render(Context({"who": "Inès Moreau"})))  # as a browser shows it
    assert shown == "Retirer l'accès d'Inès Moreau ?"


def test_the_folders_page_of_a_team_bal_says_d_accueil(dovecot) -> None:
    cast = make_cast()
    accueil = make_mailbox(
        structure=cast.structure, kind="ORG", local_part="accueil", responsible=cast.director,
        display_name="Accueil",
    )  # fmt: skip
    grant(accueil, cast.nurse, can_organise=True)
    wait_provisioned(accueil.address)
    page = unescape(client_for(cast.nurse).get(f"/bal/{accueil.public_id}/dossiers/").text)
    assert "Dossiers d'accueil@ehpad-les-tilleuls.mssante.fr" in page
