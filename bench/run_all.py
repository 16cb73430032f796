"""`make bench`: every benchmark of bench/ in one go, then docs/performance.md.

Each bench measures our figure and its baseline side by side in the same run (bench/report.py
collects them); this script runs them one after the other (never two at once: the machine is
shared), keeps each one's full output under var/bench/logs/, and writes the figures with their
baselines, ratios, goals and the machine to docs/performance.md.

    .venv/bin/python bench/run_all.py [--quick] [--only gateway_vs_postfix,faults]

--quick uses smaller sizes (a smoke run of the whole chain, not figures to publish).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# name -> (arguments, quick arguments, what it answers, issue)
BENCHES: dict[str, tuple[list[str], list[str], str, str]] = {
    "annuaire_import": (
        [], ["--rows", "50000"], "Import de l'extraction nationale de l'Annuaire Santé", "6"),
    "annuaire_search": (
        [], ["--queries", "200"], "Recherche et autocomplétion dans l'annuaire national", "21"),
    "webmail_inbox": (
        [], ["--messages", "2000", "--rounds", "40"], "Lecture d'une grosse boîte", "21"),
    "gateway_vs_postfix": (
        [], ["--messages", "500", "--rounds", "2"], "Passerelle entrante contre Postfix", "21"),
    "relay_vs_postfix": (
        [], ["--messages", "1000", "--wide-messages", "200", "--rounds", "1"],
        "Relais sortant contre Postfix réglé (1 et 50 destinataires)", "21"),
    "faults": (
        [], ["--messages", "500"], "Pannes provoquées : rien de perdu, rien de dupliqué", "8"),
    "xdm_open": (
        [], ["--rounds", "10"], "Ouvrir un message portant des documents de santé", "20"),
    "imap_login": (
        [], ["--sessions", "60", "--rounds", "2"],
        "Sessions IMAP des logiciels avec un jeton Pro Santé Connect", "18"),
    "submission": (
        [], ["--messages", "100", "--rounds", "1"],
        "Soumission des logiciels (XOAUTH2) puis relais, contre Postfix", "18"),
}  # fmt: skip


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1048576:.0f} Gio"
    except (OSError, ValueError, IndexError):
        memory = "?"
    return f"{os.cpu_count()} cœurs ({cpu or platform.processor()}), {memory} de mémoire, " \
           f"{platform.system()} {platform.release()}, Python {platform.python_version()}"  # fmt: skip


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


def number(value: float | None, unit: str = "") -> str:
    """French notation: 10 000 ; 26,3."""
    if value is None:
        return "—"
    if float(value).is_integer():
        text = f"{int(value):,}".replace(",", "\u202f")
    else:
        text = f"{value:,.1f}".replace(",", "\u202f").replace(".", ",")
    return f"{text} {unit}".strip()


def render(figures: list[dict], runs: dict[str, dict]) -> str:
    quick = any(r.get("quick") for r in runs.values())
    lines = [
        "# Performances mesurées",
        "",
        f"Produit par `make bench` (bench/run_all.py) le "
        f"{datetime.now(UTC):%Y-%m-%d à %H:%M} UTC, commit `{commit()}`"
        + (" — **exécution rapide (--quick), tailles réduites**" if quick else "")
        + ".",
        "",
        f"Machine : {machine()}. Chaque mesure est prise avec sa référence dans la même "
        "exécution (tours alternés quand c'est possible) ; le détail de chaque banc est dans "
        "`var/bench/logs/`.",
        "",
        "| Banc | Mesure | Nous | Référence (même exécution) | Rapport | Objectif (ticket) | Atteint |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (_args, _quick, _what, issue) in BENCHES.items():
        mine = [f for f in figures if f["bench"] == name]
        status = runs.get(name, {}).get("status")
        if not mine:
            why = "non exécuté" if status is None else f"échec (code {status}, voir le journal)"
            lines.append(f"| `{name}` | — | {why} | | | ticket {issue} | |")
            continue
        for f in mine:
            baseline = (
                f"{number(f['baseline'], f['unit'])} — {f['baseline_label']}"
                if f["baseline"] is not None
                else "—"
            )
            ratio = f"{f['ratio']:.2f}".replace(".", ",") if f["ratio"] is not None else "—"
            met = {True: "oui", False: "**non**", None: "—"}[f["met"]]
            goal = f"{f['goal']} (ticket {issue})" if f["goal"] else f"ticket {issue}"
            lines.append(
                f"| `{name}` | {f['label']} | {number(f['ours'], f['unit'])} | {baseline} "
                f"| {ratio} | {goal} | {met} |"
            )
    lines += ["", "## Exécutions", ""]
    for name, run in runs.items():
        lines.append(
            f"- `{name}` : le {run['at']}, {number(run['seconds'] / 60)} min, code de sortie "
            f"{run['status']}" + (" (tailles réduites, --quick)" if run.get("quick") else "")
        )
    lines += [
        "",
        "## Lire ces chiffres",
        "",
        "- Les bancs tournent l'un après l'autre sur la même machine ; la référence de chaque "
        "mesure est prise dans la même exécution, donc dans les mêmes conditions.",
        "- Passerelle et relais : Postfix 3.7 (paquet Debian) est une instance privée configurée "
        "par le banc, avec TLS et certificats clients de la même PKI de test ; il ne vérifie ni "
        "la liste blanche ni l'annuaire, nous si.",
        "- Logiciels (API LPS) : `imap_login` compare le même Dovecot avec notre validation du "
        "jeton (passdb Lua, portail, introspection au bouchon PSC) et avec une base de "
        "mots de passe statique ; `submission` compare notre serveur de soumission et le relais "
        "à Postfix en soumission (SASL Dovecot, jeton fixe, aucune validation) vers le même puits.",
        "- Pannes : les processus sont tués avec SIGKILL à des instants aléatoires et "
        "redémarrés ; un message compte comme remis s'il est dans la BAL de l'opérateur A, "
        "dupliqué s'il y est plusieurs fois.",
        "",
    ]
    # Earlier runs and what changed between them, kept by hand (never regenerated).
    history = ROOT / "bench" / "history.md"
    if history.exists():
        lines += [history.read_text("utf-8").rstrip(), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Tous les bancs, puis docs/performance.md.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = [n for n in args.only.split(",") if n]
    logs = ROOT / "var" / "bench" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    failed = False
    for name, (full, quick, what, _issue) in BENCHES.items():
        if only and name not in only:
            continue
        argv = [PY, str(ROOT / "bench" / f"{name}.py"), *(quick if args.quick else full)]
        print(f"== {name} : {what}", flush=True)
        report = logs / f"{name}.jsonl"
        report.unlink(missing_ok=True)
        started = time.monotonic()
        with (logs / f"{name}.log").open("w", encoding="utf-8") as out:
            status = subprocess.run(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "BENCH_REPORT": str(report), "PORTAL_ENV": "test"},
            ).returncode  # fmt: skip
        seconds = time.monotonic() - started
        failed |= status != 0
        (logs / f"{name}.run.json").write_text(
            json.dumps({"status": status, "seconds": seconds, "quick": args.quick,
                        "at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}), "utf-8",
        )  # fmt: skip
        print(f"   code {status}, {seconds / 60:.1f} min", flush=True)
    # Every bench's last run (this one or an earlier one, with --only), in the document.
    figures: list[dict] = []
    runs: dict[str, dict] = {}
    for name in BENCHES:
        if (logs / f"{name}.run.json").exists():
            runs[name] = json.loads((logs / f"{name}.run.json").read_text("utf-8"))
        if (logs / f"{name}.jsonl").exists():
            figures += [
                json.loads(line)
                for line in (logs / f"{name}.jsonl").read_text("utf-8").splitlines()
                if line.strip()
            ]
    docs = ROOT / "docs" / "performance.md"
    docs.parent.mkdir(exist_ok=True)
    docs.write_text(render(figures, runs), "utf-8")
    print(f"Écrit : {docs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
