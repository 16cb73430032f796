"""The mock's test professionals: one data file shaped like real PSC userinfo documents."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("identities.json")

# Labels for the picker only (the portal has its own nomenclature).
PICKER_PROFESSIONS = {
    "10": "Médecin",
    "21": "Pharmacien·ne",
    "60": "Infirmier·ère",
    "SEC": "Secrétaire médicale (RPPS+)",
    "EDS": "Éducateur spécialisé (RPPS+)",
    "DIR": "Directeur d'établissement (RPPS+)",
}


@lru_cache(maxsize=1)
def load_identities() -> list[dict[str, Any]]:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    return list(data["identities"])


def get_identity(subject_name_id: str) -> dict[str, Any] | None:
    return next((i for i in load_identities() if i["SubjectNameID"] == subject_name_id), None)


def picker_rows() -> list[dict[str, Any]]:
    rows = []
    for identity in load_identities():
        exercice = identity["SubjectRefPro"]["exercices"][0]
        rows.append(
            {
                "id": identity["SubjectNameID"],
                "name": f"{identity['given_name']} {identity['family_name']}",
                "civility": "Dr" if exercice.get("codeCiviliteDexercice") == "DR" else "",
                "profession": PICKER_PROFESSIONS.get(
                    exercice["codeProfession"], exercice["codeProfession"]
                ),
                "structures": [a["raisonSocialeSite"] for a in exercice["activities"]],
            }
        )
    return rows
