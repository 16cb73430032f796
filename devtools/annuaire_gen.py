"""A realistic national MSSanté extraction, generated (no public sample rows exist: see
../shared/samples/annuaire/README.md). Real column names (annuaire.extraction.COLUMNS), value
shapes of the reference (§A1): RPPS ids and idNat_PS, TRE_G15 profession codes, savoir-faire
codes, FINESS with their key, AFNOR address lines, French names with accents, hyphens,
apostrophes and particles. Deterministic for a seed.

Used by `bench/make_annuaire.py` (540,000 rows), the demo (a small slice) and the tests.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from annuaire.extraction import COLUMNS

LAST_NAMES = [
    "MARTIN",
    "BERNARD",
    "THOMAS",
    "PETIT",
    "ROBERT",
    "RICHARD",
    "DURAND",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFÈBVRE",
    "LEROY",
    "ROUX",
    "DAVID",
    "BERTRAND",
    "MOREL",
    "FOURNIER",
    "GIRARD",
    "BONNET",
    "DUPONT",
    "LAMBERT",
    "FONTAINE",
    "ROUSSEAU",
    "VINCENT",
    "MULLER",
    "LEFÈVRE",
    "FAURE",
    "ANDRÉ",
    "MERCIER",
    "BLANC",
    "GUÉRIN",
    "BOYER",
    "GARNIER",
    "CHEVALIER",
    "FRANÇOIS",
    "LEGRAND",
    "GAUTHIER",
    "GARCIA",
    "PERRIN",
    "ROBIN",
    "CLÉMENT",
    "MORIN",
    "NICOLAS",
    "HENRY",
    "ROUSSEL",
    "MATHIEU",
    "GAUTIER",
    "MASSON",
    "MARCHAND",
    "DUVAL",
    "DENIS",
    "DUMONT",
    "MARIE",
    "LEMAIRE",
    "NOËL",
    "MEYER",
    "DUFOUR",
    "MEUNIER",
    "BRUN",
    "BLANCHARD",
    "GIRAUD",
    "JOLY",
    "RIVIÈRE",
    "LUCAS",
    "BRUNET",
    "GAILLARD",
    "BARBIER",
    "ARNAUD",
    "MARTINEZ",
    "GÉRARD",
    "ROCHE",
    "RENARD",
    "SCHMITT",
    "ROY",
    "LEROUX",
    "COLIN",
    "VIDAL",
    "CARON",
    "PICARD",
    "ROGER",
    "FABRE",
    "AUBERT",
    "LEMOINE",
    "RENAUD",
    "DUMAS",
    "LACROIX",
    "OLIVIER",
    "PHILIPPE",
    "BOURGEOIS",
    "PIERRE",
    "BENOÎT",
    "REY",
    "LECLERC",
    "PAYET",
    "ROLLAND",
    "LECLERCQ",
    "GUILLAUME",
    "LECOMTE",
    "LOPEZ",
    "JEAN",
    "DUPUY",
    "GUILLOT",
    "HUBERT",
    "BERGER",
    "CARPENTIER",
    "SANCHEZ",
    "DUPUIS",
    "MOULIN",
    "LOUIS",
    "DESCHAMPS",
    "HUET",
    "VASSEUR",
    "PEREZ",
    "BOUCHER",
    "FLEURY",
    "ROYER",
    "KLEIN",
    "JACQUET",
    "ADAM",
    "PARIS",
    "POIRIER",
    "MARTY",
    "AUBRY",
    "GUYOT",
    "CARRÉ",
    "CHARLES",
    "RENAULT",
    "CHARPENTIER",
    "MÉNARD",
    "MAILLARD",
    "BARON",
    "BERTIN",
    "BAILLY",
    "HERVÉ",
    "SCHNEIDER",
    "FERNANDEZ",
    "LE GALL",
    "COLLET",
    "LÉGER",
    "BOUVIER",
    "JULIEN",
    "PRÉVOST",
    "MILLET",
    "PERROT",
    "DANIEL",
    "LE ROUX",
    "COUSIN",
    "GERMAIN",
    "BRETON",
    "BESSON",
    "LANGLOIS",
    "RÉMY",
    "LE GOFF",
    "PELLETIER",
    "LÉVÊQUE",
    "PERRIER",
    "LEBLANC",
    "BARRÉ",
    "LEBRUN",
    "MARCHAL",
    "WEBER",
    "MALLET",
    "HAMON",
    "BOULANGER",
    "JACOB",
    "MONNIER",
    "MICHAUD",
    "RODRIGUEZ",
    "GUICHARD",
    "GILLET",
    "ÉTIENNE",
    "GRONDIN",
    "POULAIN",
    "TESSIER",
    "CHEVALLIER",
    "COLLIN",
    "CHAUVIN",
    "DA SILVA",
    "BOUCHET",
    "GAY",
    "LEMAÎTRE",
    "BÉNARD",
    "MARÉCHAL",
    "HUMBERT",
    "REYNAUD",
    "ANTOINE",
    "HOARAU",
    "PERRET",
    "BARTHÉLEMY",
    "CORDIER",
    "PICHON",
    "LEJEUNE",
    "GILBERT",
    "LAMY",
    "DELAUNAY",
    "PASQUIER",
    "CARLIER",
    "LAPORTE",
    "N'DIAYE",
    "N'GUESSAN",
    "D'ALMEIDA",
    "DE LA FONTAINE",
    "DU BELLAY",
    "SAINT-MARTIN",
    "DIALLO",
    "NGUYEN",
    "TRAORÉ",
    "BEN SAÏD",
    "EL AMRANI",
    "HADDAD",
    "MOREAU-DUPRÉ",
    "LE BRIS",
    "DE SAINT-EXUPÉRY",
    "O'NEILL",
    "D'ARGENT",
    "KOUASSI",
    "CAMARA",
    "LÖFFLER",
    "ŒUVRARD",
]
FIRST_NAMES = [
    "Marie",
    "Jean",
    "Pierre",
    "Michel",
    "André",
    "Philippe",
    "Nathalie",
    "Isabelle",
    "Sylvie",
    "Catherine",
    "Françoise",
    "Christine",
    "Valérie",
    "Sandrine",
    "Stéphanie",
    "Céline",
    "Sophie",
    "Julie",
    "Camille",
    "Léa",
    "Chloé",
    "Manon",
    "Emma",
    "Inès",
    "Zoé",
    "Anaïs",
    "Hélène",
    "Agnès",
    "Bénédicte",
    "Gaëlle",
    "Maëlle",
    "Noémie",
    "Clémence",
    "Élodie",
    "Aurélie",
    "Mélanie",
    "Laëtitia",
    "Éric",
    "Frédéric",
    "Stéphane",
    "Sébastien",
    "Jérôme",
    "François",
    "Gérard",
    "Hervé",
    "Rémi",
    "Loïc",
    "Gaël",
    "Joël",
    "Noël",
    "Benoît",
    "Jérémy",
    "Thomas",
    "Nicolas",
    "Julien",
    "Guillaume",
    "Antoine",
    "Maxime",
    "Alexandre",
    "Hugo",
    "Lucas",
    "Théo",
    "Mathéo",
    "Raphaël",
    "Gabriel",
    "Louis",
    "Arthur",
    "Paul",
    "Claire",
    "Anne",
    "Jean-Marc",
    "Jean-Pierre",
    "Jean-François",
    "Marie-Claire",
    "Anne-Sophie",
    "Marie-Hélène",
    "Pierre-Yves",
    "Jean-Luc",
    "Marie-Ève",
    "Aïcha",
    "Fatoumata",
    "Mamadou",
    "Moussa",
    "Yasmine",
    "Karim",
    "Mehdi",
    "Nadia",
    "Samira",
    "Thi Lan",
    "Minh",
    "Siân",
    "Björn",
    "Zoë",
    "Adèle",
    "Béatrice",
    "Cécile",
    "Danièle",
    "Geneviève",
    "Irène",
    "Josée",
    "Léonie",
    "Mireille",
    "Odile",
    "Pénélope",
    "Régine",
    "Thérèse",
    "Véronique",
    "Yvette",
]
# (TRE_G15 code, libellé, category code, category label, savoir-faire [(code, libellé)], domain)
PROFESSIONS = [
    (
        "10",
        "Médecin",
        "C",
        "Civil",
        [
            ("SM53", "Spécialiste en Médecine Générale"),
            ("SM54", "Médecine Générale"),
            ("SM04", "Cardiologie et maladies vasculaires"),
            ("SM15", "Dermatologie et vénéréologie"),
            ("SM32", "Pédiatrie"),
            ("SM33", "Psychiatrie"),
            ("SM02", "Anesthésie-réanimation"),
            ("SM24", "Gynécologie-obstétrique"),
            ("SM44", "Radio-diagnostic"),
            ("SM26", "Néphrologie"),
            ("SM20", "Gériatrie"),
            ("SM42", "Pneumologie"),
        ],
        "medecin.mssante.fr",
        40,
    ),
    ("60", "Infirmier", "C", "Civil", [("", "")], "infirmier.mssante.fr", 25),
    (
        "21",
        "Pharmacien",
        "C",
        "Civil",
        [("", ""), ("SM37", "Pharmacie hospitalière")],
        "pharmacien.mssante.fr",
        10,
    ),
    (
        "40",
        "Chirurgien-Dentiste",
        "C",
        "Civil",
        [("", ""), ("SCD01", "Orthopédie dento-faciale")],
        "chirurgien-dentiste.mssante.fr",
        6,
    ),
    ("50", "Sage-Femme", "C", "Civil", [("", "")], "sage-femme.mssante.fr", 5),
    ("70", "Masseur-Kinésithérapeute", "C", "Civil", [("", "")], "kine.mssante.fr", 8),
    ("91", "Orthophoniste", "C", "Civil", [("", "")], "orthophoniste.mssante.fr", 2),
    ("80", "Pédicure-Podologue", "C", "Civil", [("", "")], "podologue.mssante.fr", 2),
    ("94", "Ergothérapeute", "C", "Civil", [("", "")], "ergotherapeute.mssante.fr", 1),
    ("10", "Médecin", "M", "Militaire", [("SM54", "Médecine Générale")], "medecin.mssante.fr", 1),
]
TOWNS = [
    ("75013", "PARIS", "75"),
    ("75018", "PARIS", "75"),
    ("69003", "LYON", "69"),
    ("69008", "LYON", "69"),
    ("13008", "MARSEILLE", "13"),
    ("31000", "TOULOUSE", "31"),
    ("06000", "NICE", "06"),
    ("44000", "NANTES", "44"),
    ("67000", "STRASBOURG", "67"),
    ("34000", "MONTPELLIER", "34"),
    ("33000", "BORDEAUX", "33"),
    ("59000", "LILLE", "59"),
    ("35000", "RENNES", "35"),
    ("51100", "REIMS", "51"),
    ("42000", "SAINT-ÉTIENNE", "42"),
    ("83000", "TOULON", "83"),
    ("38000", "GRENOBLE", "38"),
    ("21000", "DIJON", "21"),
    ("49000", "ANGERS", "49"),
    ("30000", "NÎMES", "30"),
    ("63000", "CLERMONT-FERRAND", "63"),
    ("72000", "LE MANS", "72"),
    ("29200", "BREST", "29"),
    ("37000", "TOURS", "37"),
    ("80000", "AMIENS", "80"),
    ("87000", "LIMOGES", "87"),
    ("74000", "ANNECY", "74"),
    ("66000", "PERPIGNAN", "66"),
    ("57000", "METZ", "57"),
    ("25000", "BESANÇON", "25"),
    ("45000", "ORLÉANS", "45"),
    ("76000", "ROUEN", "76"),
    ("14000", "CAEN", "14"),
    ("54000", "NANCY", "54"),
    ("20000", "AJACCIO", "2A"),
    ("20200", "BASTIA", "2B"),
    ("97400", "SAINT-DENIS", "974"),
    ("97200", "FORT-DE-FRANCE", "972"),
    ("71100", "CHALON-SUR-SAÔNE", "71"),
    ("69400", "VILLEFRANCHE-SUR-SAÔNE", "69"),
    ("01000", "BOURG-EN-BRESSE", "01"),
    ("64000", "PAU", "64"),
    ("17000", "LA ROCHELLE", "17"),
    ("62000", "ARRAS", "62"),
    ("26000", "VALENCE", "26"),
    ("84000", "AVIGNON", "84"),
]
STREETS = [
    ("RUE", "DE LA RÉPUBLIQUE"),
    ("AV", "JEAN JAURÈS"),
    ("BD", "PASTEUR"),
    ("RUE", "VICTOR HUGO"),
    ("PL", "DE L'ÉGLISE"),
    ("RUE", "DES ÉCOLES"),
    ("CHE", "DU MOULIN"),
    ("AV", "DU GÉNÉRAL LECLERC"),
    ("RUE", "SAINT-EXUPÉRY"),
    ("QUAI", "CLAUDE BERNARD"),
    ("RTE", "DE LYON"),
    ("ALL", "DES TILLEULS"),
]
STRUCTURE_KINDS = [
    ("CH", "CENTRE HOSPITALIER", "ch"),
    ("CHU", "CENTRE HOSPITALIER UNIVERSITAIRE", "chu"),
    ("CLIN", "CLINIQUE", "clinique"),
    ("EHPAD", "EHPAD", "ehpad"),
    ("LAB", "LABORATOIRE", "labo"),
    ("CDS", "CENTRE DE SANTÉ", "cds"),
    ("MSP", "MAISON DE SANTÉ PLURIPROFESSIONNELLE", "msp"),
]
ORG_SERVICES = [
    ("secretariat", "Secrétariat médical"),
    ("cardiologie", "Cardiologie"),
    ("urgences", "Urgences"),
    ("pharmacie", "Pharmacie à usage intérieur"),
    ("radiologie", "Imagerie médicale"),
    ("dim", "Département d'information médicale"),
    ("resultats", "Résultats de biologie"),
    ("soins", "Équipe soignante"),
    ("accueil", "Accueil des admissions"),
    ("geriatrie", "Gériatrie"),
]


def ascii_local(value: str) -> str:
    """The address form of a name: accents removed, lower case, hyphens kept, apostrophes and
    spaces dropped (the naming rule of the seed FAQ)."""
    value = unicodedata.normalize("NFKD", value.replace("Œ", "OE").replace("œ", "oe"))
    value = "".join(c for c in value if not unicodedata.combining(c)).lower()
    return "".join(c for c in value if c.isalnum() or c == "-")


def luhn_finess(prefix: str) -> str:
    digits = [int(d) for d in prefix]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return prefix + str((10 - total % 10) % 10)


class Generator:
    def __init__(self, seed: int = 2026) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (test data)
        self.used: dict[str, int] = {}
        self.structures = self._structures(4000)
        weights = [p[-1] for p in PROFESSIONS]
        self._professions = self.rng.choices(PROFESSIONS, weights=weights, k=4096)

    def _structures(self, n: int) -> list[dict[str, str]]:
        out = []
        for i in range(n):
            kind, label, slug = self.rng.choice(STRUCTURE_KINDS)
            postal, town, dept = self.rng.choice(TOWNS)
            place = town.title() if self.rng.random() < 0.6 else self.rng.choice(LAST_NAMES).title()
            dept2 = dept if len(dept) == 2 else "97"
            finess = luhn_finess(f"{dept2}{i:06d}"[:8]) if dept2.isdigit() else f"{dept2}{i:06d}0"
            out.append(
                {
                    "name": f"{label} {place.upper()}",
                    "sign": f"{kind} {place}" if self.rng.random() < 0.3 else "",
                    "domain": f"{slug}-{ascii_local(place)}-{i}.mssante.fr",
                    "finess": finess,
                    "postal": postal,
                    "town": town,
                    "dept": dept,
                }
            )
        return out

    def _address(self, local: str, domain: str) -> str:
        key = f"{local}@{domain}"
        n = self.used.get(key, 0)
        self.used[key] = n + 1
        return key if n == 0 else f"{local}{n + 1}@{domain}"

    def row(self, i: int) -> dict[str, str]:
        rng = self.rng
        st = self.structures[rng.randrange(len(self.structures))]
        street_type, street = rng.choice(STREETS)
        values = dict.fromkeys(COLUMNS, "")
        values.update(
            {
                "Raison Sociale structure BAL": st["name"],
                "Enseigne commerciale structure BAL": st["sign"],
                "L4NUMEROVOIE structure BAL": str(rng.randint(1, 180)),
                "L4COMPLEMENTNUMEROVOIE structure BAL": "B" if rng.random() < 0.05 else "",
                "NL4TYPEVOIE structure BAL": street_type,
                "L4LIBELLEVOIE structure BAL": street,
                "L6LIGNEACHEMINEMENT structure BAL": f"{st['postal']} {st['town']}",
                "Code postal structure BAL": st["postal"],
                "Département structure BAL": st["dept"],
                "Pays structure BAL": "France",
                "Type identifiant structure": "1",
                "Identification Structure": st["finess"],
            }
        )
        if rng.random() < 0.15:
            local, service = rng.choice(ORG_SERVICES)
            values.update(
                {
                    "Type de BAL": "ORG",
                    "Adresse BAL": self._address(local, st["domain"]),
                    "Service de rattachement": service,
                    "Dématérialisation": "O",
                }
            )
            return values
        code, label, cat, cat_label, skills, prof_domain, _w = self._professions[i % 4096]
        skill_code, skill_label = rng.choice(skills)
        last = rng.choice(LAST_NAMES)
        if rng.random() < 0.05:
            last = f"{last}-{rng.choice(LAST_NAMES)}"
        first = rng.choice(FIRST_NAMES)
        rpps = f"10{rng.randrange(10**9):09d}"
        hospital = rng.random() < 0.45
        domain = st["domain"] if hospital else prof_domain
        if not hospital:
            values["Type identifiant structure"] = "" if rng.random() < 0.3 else "3"
            values["Identification Structure"] = (
                f"{rng.randrange(10**14):014d}" if values["Type identifiant structure"] else ""
            )
        values.update(
            {
                "Type de BAL": "PER",
                "Adresse BAL": self._address(f"{ascii_local(first)}.{ascii_local(last)}", domain),
                "Type Identifiant PP": "8",
                "Identifiant PP": rpps,
                "Identification nationale PP": f"8{rpps}",
                "Service de rattachement": rng.choice(ORG_SERVICES)[1] if hospital else "",
                "Civilité d'exercice": "DR" if code == "10" else "",
                "Nom d'exercice": last,
                "Prénom d'exercice": first,
                "Catégorie profession": cat,
                "Libellé de catégorie profession": cat_label,
                "Code Profession": code,
                "Libellé Profession": label,
                "Code savoir-faire": skill_code,
                "Libellé savoir-faire": skill_label,
                "Dématérialisation": "O" if rng.random() < 0.8 else "N",
            }
        )
        return values

    def rows(self, n: int) -> Iterator[dict[str, str]]:
        for i in range(n):
            yield self.row(i)


def line(values: dict[str, str]) -> str:
    return "|".join(values[c] for c in COLUMNS) + "\n"


HEADER = "|".join(COLUMNS) + "\n"


def write(
    path: Path, rows: int, seed: int = 2026, extra: list[dict[str, str]] | None = None
) -> Path:
    """Write an extraction of ``rows`` generated BALs (plus ``extra`` rows first)."""
    gen = Generator(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for values in extra or []:
            full = dict.fromkeys(COLUMNS, "")
            full.update(values)
            out.write(line(full))
        batch: list[str] = []
        for values in gen.rows(rows):
            batch.append(line(values))
            if len(batch) >= 5000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    return path


def mutate(source: Path, target: Path, percent: float, seed: int = 7) -> dict[str, int]:
    """A next day's file: ``percent`` % of the rows changed (a field or two), a tenth of that
    removed and as many added. Returns what was done."""
    rng = random.Random(seed)  # noqa: S311 (test data)
    counts = {"changed": 0, "removed": 0, "added": 0}
    gen = Generator(seed + 1)
    rate = percent / 100
    with (
        source.open(encoding="utf-8") as src,
        target.open("w", encoding="utf-8", newline="") as out,
    ):
        out.write(src.readline())
        for raw in src:
            r = rng.random()
            if r < rate / 10:
                counts["removed"] += 1
                continue
            if r < rate:
                values = dict(zip(COLUMNS, raw.rstrip("\n").split("|"), strict=True))
                postal, town, dept = rng.choice(TOWNS)
                values["L6LIGNEACHEMINEMENT structure BAL"] = f"{postal} {town}"
                values["Code postal structure BAL"] = postal
                values["Département structure BAL"] = dept
                values["L4NUMEROVOIE structure BAL"] = str(rng.randint(181, 400))
                raw = line(values)
                counts["changed"] += 1
            out.write(raw)
            if r > 1 - rate / 10:
                values = gen.row(counts["added"])
                values["Adresse BAL"] = f"nouveau{counts['added']}.{values['Adresse BAL']}"
                out.write(line(values))
                counts["added"] += 1
    return counts
