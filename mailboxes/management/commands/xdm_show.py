"""Print the health documents of a message as JSON: what an applicative BAL's software reads
(the same function as the webmail's panel, ``message_documents``)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import Http404

from mailboxes.access import Grant
from mailboxes.models import Mailbox
from mailboxes.webmail.services.documents import message_documents
from mssante_portal.errors import PortalError


class Command(BaseCommand):
    help = (
        "Affiche en JSON les documents de santé (archive IHE_XDM.ZIP : patient, documents, "
        "fichiers) d'un message d'une BAL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("address", help="Adresse de la BAL")
        parser.add_argument("uid", type=int, help="UID IMAP du message")
        parser.add_argument("--dossier", default="INBOX", help="Dossier (défaut : INBOX)")

    def handle(self, *args: Any, **options: Any) -> None:
        mailbox = Mailbox.objects.filter(address__iexact=options["address"].strip()).first()
        if mailbox is None:
            raise CommandError(f"BAL inconnue : {options['address']}")
        # The operator's command reads, as the BAL's software would: READ only, traced.
        grant = Grant(mailbox, read=True, organise=False, send=False, manage=False,
                      relation="software")  # fmt: skip
        try:
            found = message_documents(
                grant=grant, actor=None, folder=options["dossier"], uid=options["uid"]
            )
        except Http404 as exc:
            raise CommandError("Message introuvable dans ce dossier.") from exc
        except PortalError as exc:
            raise CommandError(exc.user_message) from exc
        self.stdout.write(json.dumps(found.as_json(), ensure_ascii=False, indent=2))
