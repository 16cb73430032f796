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

# The demo whitelist: the operator of devtools/pki.py ("peer" certificate) may send to us.
DEMO_PEER_DOMAIN = "operateur-test.mssante.fr"
DEMO_PEER_DN = "CN=smtp.operateur-test.fr,OU=1750000000,O=OPERATEUR TEST,C=FR"

# Organisational BALs of every demo structure (local part, display name, service).
TEAM_BALS = [
    ("soins", "Équipe soignante", "Soins"),
    ("secretariat", "Secrétariat", "Secrétariat médical"),
]
APP_BAL = ("dui-noreply", "DUI (envoi automatique)", "Logiciel de dossier usager informatisé")

# Who works in which team BAL, by national id (the directors are responsible of every BAL).
TEAM_MEMBERS = {
    "soins": ["899700120019", "899700120027", "899700120050"],
    "secretariat": ["899700120035"],
}
# Sophie Petit, secretary, is a delegate of Dr Claire Martin's personal BAL.
DELEGATIONS = [("899700120019", "899700120035")]

# A few messages so that the webmail is not empty (delivered over LMTP once Dovecot runs).
MESSAGES = [
    (
        "claire.martin@ehpad-les-tilleuls.mssante.fr",
        "Laboratoire Bio Lyon <resultats@labo-biolyon.mssante.fr>",
        "Résultats de biologie — Mme D.",
        "Bonjour Docteur,\n\nVeuillez trouver les résultats du bilan du 18/11 : NFS normale, "
        "CRP 4 mg/L, créatinine 82 µmol/L.\n\nCordialement,\nLe laboratoire",
    ),
    (
        "claire.martin@ehpad-les-tilleuls.mssante.fr",
        "Dr Paul Durand <paul.durand@chu-lyon.mssante.fr>",
        "Courrier de sortie d'hospitalisation",
        "Chère consœur,\n\nVotre résidente est sortie ce jour du service de cardiologie. "
        "Traitement : bisoprolol 2,5 mg le matin. Contrôle dans un mois.\n\n"
        "Bien confraternellement.",
    ),
    (
        "soins@ehpad-les-tilleuls.mssante.fr",
        "SSIAD du Val de Saône <soins@ssiad-val-de-saone.mssante.fr>",
        "Transmission : retour à domicile de M. B.",
        "Bonjour à l'équipe,\n\nM. B. rentre à domicile vendredi ; nous reprenons les soins "
        "infirmiers samedi matin. Pouvez-vous nous transmettre le dernier plan de soins ?\n\n"
        "Merci.",
    ),
]
