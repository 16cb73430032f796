"""The demo structures. Their FINESS numbers are fictitious but valid (Luhn key), and the
PSC mock's identities (devtools/psc_mock/identities.json) work in them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoStructure:
    kind: str
    identifier: str
    name: str
    domain: str


STRUCTURES = [
    DemoStructure("finess_eg", "690001235", "EHPAD Les Tilleuls", "ehpad-les-tilleuls.mssante.fr"),
    DemoStructure(
        "finess_eg", "710004565", "SSIAD du Val de Saône", "ssiad-val-de-saone.mssante.fr"
    ),
    DemoStructure(
        "finess_eg", "690002001", "IME Les Coquelicots", "ime-les-coquelicots.mssante.fr"
    ),
]

# national id -> FINESS of the structures they direct
DIRECTORS = {
    "899700120068": ["690001235", "710004565"],  # Marc Lefebvre, directeur de l'EHPAD et du SSIAD
}
