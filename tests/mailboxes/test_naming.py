"""The address proposed for a personal BAL, on real-world names."""

from __future__ import annotations

import pytest

from mailboxes.console.services.naming import address_propose, local_part_for
from mailboxes.models import Mailbox
from tests.factories import make_professional, make_structure


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("Jean-Marc", "N'DIAYE", "jean-marc.ndiaye"),
        ("Hélène", "LEFÈVRE", "helene.lefevre"),
        ("Marie", "DE LA FONTAINE", "marie.de-la-fontaine"),
        ("Anne-Sophie", "SAINT-EXUPÉRY", "anne-sophie.saint-exupery"),
        ("Zoë", "D\u2019ALMEIDA", "zoe.dalmeida"),  # typographic apostrophe
        ("Œdipe", "CŒUR", "oedipe.coeur"),
        ("Thi Lan", "NGUYEN", "thi-lan.nguyen"),
        ("Björn", "LÖFFLER", "bjorn.loffler"),
        ("Aïcha", "BEN SAÏD", "aicha.ben-said"),
        ("", "MARTIN", "martin"),
        ("Jean--Luc ", " DU  BELLAY", "jean-luc.du-bellay"),
    ],
)
def test_the_naming_rule_on_real_world_names(first: str, last: str, expected: str) -> None:
    assert local_part_for(first, last) == expected


def test_a_taken_address_gets_a_numeric_suffix(db) -> None:
    structure = make_structure()
    domain = structure.domains.get()
    owner = make_professional()
    for local in ("helene.lefevre", "helene.lefevre2"):
        Mailbox.objects.create(structure=structure, domain=domain, local_part=local,
                               address=f"{local}@{domain.domain}", kind="PER", owner=owner,
                               display_name=local)  # fmt: skip
    proposed = address_propose(first_name="Hélène", last_name="Lefèvre", domain=domain.domain)
    assert proposed == f"helene.lefevre3@{domain.domain}"
    other = address_propose(first_name="Hélène", last_name="Lefèbvre", domain=domain.domain)
    assert other == f"helene.lefebvre@{domain.domain}"


def test_no_name_no_address(db) -> None:
    with pytest.raises(ValueError, match="impossible de proposer"):
        address_propose(first_name="'", last_name="-", domain="x.mssante.fr")
