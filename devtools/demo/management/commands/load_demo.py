"""Load the demo structures, professionals and mailboxes (idempotent; run by `make run`).

With ``--mail``, also deliver a few demo messages over LMTP to BALs whose inbox is empty
(Dovecot must be running).
"""

from __future__ import annotations

import smtplib
import unicodedata
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Structure, User
from accounts.psc.claims import parse_userinfo
from accounts.services import membership_set_role, structure_create, user_sync_from_psc
from annuaire.models import WhitelistEntry, WhitelistVersion
from annuaire.whitelist import dn_key
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
from mailboxes.models import Mailbox, MailboxAccess
from mailboxes.services.lifecycle import mailbox_access_grant, mailbox_create
from mailboxes.store.imap import MailStore


def local_part(user: User) -> str:
    raw = f"{user.first_name}.{user.last_name}".lower().replace(" ", "-")
    return unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()


class Command(BaseCommand):
    help = "Charge les structures, professionnels et BAL de démonstration (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--mail", action="store_true", help="Dépose aussi quelques messages.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["mail"]:
            self.deliver_messages()
            return
        with transaction.atomic():
            self.load()
        self.stdout.write(
            self.style.SUCCESS(
                f"Démonstration prête : {Structure.objects.count()} structures, "
                f"{User.objects.exclude(national_id=None).count()} professionnels, "
                f"{Mailbox.objects.count()} BAL."
            )
        )

    def load(self) -> None:
        for demo in STRUCTURES:
            if not Structure.objects.filter(
                identifier_kind=demo.kind, identifier=demo.identifier
            ).exists():
                structure_create(
                    identifier_kind=demo.kind,
                    identifier=demo.identifier,
                    name=demo.name,
                    domains=[demo.domain],
                )
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
                structure = Structure.objects.get(identifier=finess)
                membership_set_role(
                    structure=structure, user=director, role=Membership.Role.DIRECTOR, actor=None
                )
        for structure in Structure.objects.all():
            self.load_mailboxes(structure)
        self.load_whitelist()
        for owner_id, delegate_id in DELEGATIONS:
            box = Mailbox.objects.filter(owner__national_id=owner_id).first()
            delegate = User.objects.get(national_id=delegate_id)
            if box and not MailboxAccess.objects.filter(mailbox=box, user=delegate).exists():
                mailbox_access_grant(
                    mailbox=box, user=delegate, kind="delegate", can_send=True, actor=None
                )

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
                    mailbox_access_grant(
                        mailbox=box, user=user, kind="member", can_send=True,
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

    def deliver_messages(self) -> None:
        empty = set()
        for address in {m[0] for m in MESSAGES}:
            if Mailbox.objects.filter(address=address).exists():
                with MailStore(address) as store:
                    if not store.client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]:
                        empty.add(address)
        delivered = 0
        for address, sender, subject, body in MESSAGES:
            if address not in empty:
                continue
            message = EmailMessage()
            message["From"] = sender
            message["To"] = address
            message["Subject"] = subject
            message["Date"] = formatdate(localtime=True)
            message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].rstrip(">"))
            message.set_content(body)
            with smtplib.LMTP(settings.DOVECOT_IMAP_HOST, settings.DOVECOT_LMTP_PORT) as lmtp:
                lmtp.send_message(message)
            delivered += 1
        self.stdout.write(f"Messages de démonstration déposés : {delivered}")
