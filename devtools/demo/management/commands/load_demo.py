"""Load the demo structures, professionals and mailboxes (idempotent; run by `make run`).

A structure's directors, BALs, members and delegations are seeded once, in the run that
creates the structure: a later run (every `make run`) leaves what people did in the demo as
it is (a BAL closed, a right taken back, a director demoted, a person invited) and creates
no BAL for them. The professionals are synced from the PSC mock identities every run.

With ``--mail``, also deliver a few demo messages over LMTP to BALs whose inbox is empty
(Dovecot must be running).
"""

from __future__ import annotations

import random
import smtplib
import unicodedata
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Structure, StructureDomain, User
from accounts.psc.claims import parse_userinfo
from accounts.services import membership_set_role, structure_create, user_sync_from_psc
from annuaire.models import DirectoryEntry, WhitelistEntry, WhitelistVersion
from annuaire.services import directory_import
from annuaire.whitelist import dn_key
from devtools import annuaire_gen
from devtools.demo.data import (
    APP_BAL,
    DELEGATIONS,
    DEMO_PEER_DN,
    DEMO_PEER_DOMAIN,
    DIRECTORS,
    MESSAGES,
    STRUCTURES,
    TEAM_BALS,
    TEAM_MEMBERS,
)
from devtools.psc_mock.identities import load_identities
from mailboxes.console.services.lifecycle import mailbox_create
from mailboxes.console.services.people import access_set
from mailboxes.console.services.usage import usage_compute
from mailboxes.models import Mailbox, MailboxAccess, MailboxMonthlyUsage
from mailboxes.store import dovecot
from mailboxes.store.imap import MailStore

# Partner domains of the fictitious usage history, with their structures.
DEMO_PARTNERS = {
    "labo-biolyon.mssante.fr": "Laboratoire Bio Lyon",
    "ch-chalon.mssante.fr": "Centre hospitalier de Chalon-sur-Saône",
    "medecin.mssante.fr": "Cabinets libéraux",
    "pharmacie-du-centre.mssante.fr": "Pharmacie du Centre",
}

# Correspondents of the demo messages, as the national extraction lists them.
ANNUAIRE_PEERS = [
    {
        "Type de BAL": "PER",
        "Adresse BAL": "paul.durand@chu-lyon.mssante.fr",
        "Type Identifiant PP": "8",
        "Identifiant PP": "10003456789",
        "Identification nationale PP": "810003456789",
        "Civilité d'exercice": "DR",
        "Nom d'exercice": "DURAND",
        "Prénom d'exercice": "Paul",
        "Code Profession": "10",
        "Libellé Profession": "Médecin",
        "Code savoir-faire": "SM04",
        "Libellé savoir-faire": "Cardiologie et maladies vasculaires",
        "Raison Sociale structure BAL": "CENTRE HOSPITALIER UNIVERSITAIRE DE LYON",
        "Service de rattachement": "Cardiologie",
        "L6LIGNEACHEMINEMENT structure BAL": "69003 LYON",
        "Code postal structure BAL": "69003",
        "Département structure BAL": "69",
        "Pays structure BAL": "France",
    },
    {
        "Type de BAL": "ORG",
        "Adresse BAL": "resultats@labo-biolyon.mssante.fr",
        "Raison Sociale structure BAL": "LABORATOIRE BIO LYON",
        "Service de rattachement": "Résultats de biologie",
        "L6LIGNEACHEMINEMENT structure BAL": "69008 LYON",
        "Code postal structure BAL": "69008",
        "Département structure BAL": "69",
        "Pays structure BAL": "France",
    },
    {
        "Type de BAL": "PER",
        "Adresse BAL": "dr.durand@operateur-test.mssante.fr",
        "Type Identifiant PP": "8",
        "Identifiant PP": "10004567890",
        "Identification nationale PP": "810004567890",
        "Civilité d'exercice": "DR",
        "Nom d'exercice": "DURAND",
        "Prénom d'exercice": "Élise",
        "Code Profession": "10",
        "Libellé Profession": "Médecin",
        "Code savoir-faire": "SM54",
        "Libellé savoir-faire": "Médecine Générale",
        "L6LIGNEACHEMINEMENT structure BAL": "71100 CHALON-SUR-SAÔNE",
        "Code postal structure BAL": "71100",
        "Département structure BAL": "71",
        "Pays structure BAL": "France",
    },
]


def _annuaire_row(box: Mailbox) -> dict[str, str]:
    """How the national extraction would list one of the demo's BALs."""
    structure = box.structure
    row = {
        "Type de BAL": box.kind,
        "Adresse BAL": box.address,
        "Type identifiant structure": "1",
        "Identification Structure": structure.identifier,
        "Raison Sociale structure BAL": structure.name.upper(),
        "Service de rattachement": box.service,
        "Pays structure BAL": "France",
    }
    owner = box.owner
    if box.kind == "PER" and owner is not None and owner.national_id:
        row.update(
            {
                "Type Identifiant PP": owner.national_id[0],
                "Identifiant PP": owner.national_id[1:],
                "Identification nationale PP": owner.national_id,
                "Civilité d'exercice": owner.civility or "",
                "Nom d'exercice": owner.last_name.upper(),
                "Prénom d'exercice": owner.first_name,
                "Code Profession": owner.profession_code or "",
            }
        )
    return row


def local_part(user: User) -> str:
    raw = f"{user.first_name}.{user.last_name}".lower().replace(" ", "-")
    return unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()


class Command(BaseCommand):
    help = "Charge les structures, professionnels et BAL de démonstration (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--mail", action="store_true", help="Dépose aussi quelques messages.")
        parser.add_argument(
            "--structures",
            default="",
            help="FINESS des structures hébergées, séparés par des virgules (défaut : toutes).",
        )
        parser.add_argument(
            "--bare",
            action="store_true",
            help="Structures, personnes et BAL personnelles seulement : ni BAL d'équipe, ni "
            "liste blanche ou annuaire de démonstration, ni historique d'usage.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["mail"]:
            self.deliver_messages()
            return
        self.hosted = {f for f in options["structures"].split(",") if f}
        self.bare = options["bare"]
        self.fresh: set[int] = set()  # the structures this run creates: seeded once
        with transaction.atomic():
            self.load()
            if not self.bare:
                self.seed_usage()
        self.stdout.write(
            self.style.SUCCESS(
                f"Démonstration prête : {Structure.objects.count()} structures, "
                f"{User.objects.exclude(national_id=None).count()} professionnels, "
                f"{Mailbox.objects.count()} BAL."
            )
        )

    def load(self) -> None:
        for demo in STRUCTURES:
            if self.hosted and demo.identifier not in self.hosted:
                continue
            if not Structure.objects.filter(
                identifier_kind=demo.kind, identifier=demo.identifier
            ).exists():
                created = structure_create(
                    identifier_kind=demo.kind,
                    identifier=demo.identifier,
                    name=demo.name,
                    domains=[demo.domain],
                )
                self.fresh.add(created.pk)
        for document in load_identities():
            identity = parse_userinfo(document)
            user, new = User.objects.get_or_create(
                national_id=identity.national_id, defaults={"username": identity.national_id}
            )
            if new:
                user.set_unusable_password()  # professionals sign in only through PSC
            user_sync_from_psc(user=user, identity=identity)
        for national_id, finess_list in DIRECTORS.items():
            director = User.objects.get(national_id=national_id)
            for finess in finess_list:
                structure = Structure.objects.filter(identifier=finess).first()
                if structure is None or structure.pk not in self.fresh:  # hosted elsewhere,
                    continue  # or seeded in an earlier run: its roles are the directors' now
                membership_set_role(
                    structure=structure, user=director, role=Membership.Role.DIRECTOR, actor=None
                )
        for structure in Structure.objects.filter(pk__in=self.fresh):
            self.load_mailboxes(structure)
        if self.bare:
            return
        self.load_whitelist()
        self.load_annuaire()
        for owner_id, delegate_id in DELEGATIONS:
            box = Mailbox.objects.filter(
                owner__national_id=owner_id, structure_id__in=self.fresh
            ).first()
            delegate = User.objects.get(national_id=delegate_id)
            if box and not MailboxAccess.objects.filter(mailbox=box, user=delegate).exists():
                # The holder delegates (nobody else may); reading, organising and sending.
                access_set(
                    mailbox=box, user=delegate, can_organise=True, can_send=True,
                    actor=box.owner,
                )  # fmt: skip

    def load_whitelist(self) -> None:
        """A demo whitelist naming the test PKI's peer operator, unless a real list is in force
        (`manage.py sync_whitelist` with the signed national file replaces it)."""
        if WhitelistVersion.objects.filter(is_current=True).exists():
            return
        version = WhitelistVersion.objects.create(
            generated_at=timezone.now(),
            source="démonstration (non signée)",
            sha256="0" * 64,
            signer_subject="démonstration",
            entries=1,
            domains=1,
            dns=1,
            is_current=True,
        )
        WhitelistEntry.objects.create(
            version=version,
            domain=DEMO_PEER_DOMAIN,
            dn=DEMO_PEER_DN,
            dn_key=dn_key(DEMO_PEER_DN),
            description="Opérateur de démonstration (PKI de test)",
        )

    def load_annuaire(self) -> None:
        """A slice of a generated national extraction (devtools/annuaire_gen.py, 2,000 BALs),
        with the demo's own PER and ORG BALs (APP BALs are not in the public extraction) and
        the correspondents of the demo messages; their domains join the demo whitelist."""
        if DirectoryEntry.objects.exists():
            return
        extra = [_annuaire_row(box) for box in Mailbox.objects.exclude(kind="APP")]
        extra += ANNUAIRE_PEERS
        path = (
            Path(settings.VAR_DIR) / "demo" / "Extraction_Correspondance_MSSante_202611300300.txt"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        annuaire_gen.write(path, 2000, seed=2026, extra=extra)
        directory_import(path=path, source="démonstration (extraction générée)")
        version = WhitelistVersion.objects.filter(
            is_current=True, source="démonstration (non signée)"
        ).first()
        if version is None:  # a real list is in force: it decides
            return
        listed = set(version.entry_set.values_list("domain", flat=True))
        hosted = set(StructureDomain.objects.values_list("domain", flat=True))
        domains = set(DirectoryEntry.objects.values_list("domain", flat=True).distinct())
        WhitelistEntry.objects.bulk_create(
            WhitelistEntry(
                version=version,
                domain=domain,
                dn=DEMO_PEER_DN,
                dn_key=dn_key(DEMO_PEER_DN),
                description="Domaine de démonstration (annuaire généré)",
            )
            for domain in sorted(domains - listed - hosted)
        )
        version.domains = version.entry_set.values("domain").distinct().count()
        version.entries = version.entry_set.count()
        version.save(update_fields=["domains", "entries"])

    def load_mailboxes(self, structure: Structure) -> None:
        members = list(
            Membership.objects.filter(structure=structure)
            .select_related("user")
            .order_by("user__last_name")
        )
        directors = [m.user for m in members if m.role == Membership.Role.DIRECTOR]
        people = [m.user for m in members]
        if not people:
            return
        responsible = directors[0] if directors else people[0]
        for user in people:
            if (
                user in directors
                or Mailbox.objects.filter(owner=user, structure=structure).exists()
            ):
                continue
            mailbox_create(
                structure=structure,
                kind=Mailbox.Kind.PER,
                local_part=local_part(user),
                display_name=user.display_name,
                owner=user,
                actor=None,
            )
        if self.bare:
            return
        for local, name, service in TEAM_BALS:
            box = Mailbox.objects.filter(
                structure=structure, local_part=local
            ).first() or mailbox_create(
                structure=structure,
                kind=Mailbox.Kind.ORG,
                local_part=local,
                display_name=f"{name} — {structure.name}",
                responsible=responsible,
                service=service,
                actor=None,
            )
            wanted = [
                u for u in people if u.national_id in TEAM_MEMBERS.get(local, []) or u in directors
            ]
            for user in wanted:
                if not MailboxAccess.objects.filter(mailbox=box, user=user).exists():
                    access_set(
                        mailbox=box, user=user, can_organise=True, can_send=True,
                        can_manage=user in directors, actor=None,
                    )  # fmt: skip
        local, name, description = APP_BAL
        if not Mailbox.objects.filter(structure=structure, local_part=local).exists():
            mailbox_create(
                structure=structure,
                kind=Mailbox.Kind.APP,
                local_part=local,
                display_name=f"{name} — {structure.name}",
                responsible=responsible,
                description=description,
                actor=None,
            )

    def seed_usage(self) -> None:
        """A past year of monthly usage for the console's charts (demo only, fictitious
        figures, older than the two months the hourly task recomputes from real traces)."""
        today = timezone.localdate().replace(day=1)
        months = []
        for _ in range(12):
            today = (today - timedelta(days=1)).replace(day=1)
            months.append(today)
        rows = []
        for box in Mailbox.objects.filter(structure_id__in=self.fresh).exclude(
            kind=Mailbox.Kind.APP
        ):
            if MailboxMonthlyUsage.objects.filter(mailbox=box).exists():
                continue
            rng = random.Random(box.address)  # noqa: S311 (fictitious figures)
            for n, month in enumerate(months[1:]):
                received = rng.randint(8, 40) + (11 - n)
                partners = {d: rng.randint(1, received) for d in DEMO_PARTNERS}
                rows.append(
                    MailboxMonthlyUsage(
                        mailbox=box, month=month, received=received,
                        sent=rng.randint(3, received), correspondents=rng.randint(3, 15),
                        domains=dict(sorted(partners.items(), key=lambda kv: -kv[1])),
                        structures={DEMO_PARTNERS[d]: c for d, c in partners.items()},
                    )
                )  # fmt: skip
        MailboxMonthlyUsage.objects.bulk_create(rows)

    def deliver_messages(self) -> None:
        """Each demo message once: known by its own Message-ID, whatever else the BAL holds
        (the notices its holder got while the demo was set up, mail sent in an earlier run)."""
        delivered = 0
        for n, (address, sender, subject, body) in enumerate(MESSAGES, start=1):
            if not Mailbox.objects.filter(address=address, status=Mailbox.Status.ACTIVE).exists():
                continue  # closed, suspended or renamed in the demo: left alone
            domain = sender.rsplit("@", 1)[-1].rstrip(">")
            message_id = f"<demo-{n}@{domain}>"
            with MailStore(address) as store:
                if store.search_header("INBOX", "Message-ID", message_id):
                    continue
            message = EmailMessage()
            message["From"] = sender
            message["To"] = address
            message["Subject"] = subject
            message["Date"] = formatdate(localtime=True)
            message["Message-ID"] = message_id
            message.set_content(body)
            with smtplib.LMTP(str(dovecot.instance_from_settings().lmtp_socket)) as lmtp:
                lmtp.send_message(message)
            delivered += 1
        self.stdout.write(f"Messages de démonstration déposés : {delivered}")
        usage_compute()
