"""Send N messages from a BAL through the real send service (as the webmail does): spool,
Sent copy, trace, relay task. Used by bench/faults.py; prints one Message-ID per accepted
message, so that the bench knows exactly what was accepted."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mailboxes.access import access_mailbox
from mailboxes.models import Mailbox
from mailboxes.webmail.services.compose import Draft, message_send


class Command(BaseCommand):
    help = "Envoie N messages depuis une BAL par le service d'envoi (banc d'essai)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sender")
        parser.add_argument("recipient")
        parser.add_argument("--count", type=int, default=100)
        parser.add_argument("--start", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        box = Mailbox.objects.select_related("owner").get(address=options["sender"])
        assert box.owner is not None
        grant = access_mailbox(box.owner, box.public_id)
        body = "Message de charge pour le banc de pannes.\n" + "x" * 1900 + "\n"
        for n in range(options["start"], options["start"] + options["count"]):
            try:
                message = message_send(
                    grant=grant,
                    actor=box.owner,
                    draft=Draft(to=[options["recipient"]], subject=f"charge {n}", body=body),
                )
            except Exception as exc:
                self.stderr.write(f"refusé {n}: {exc!r}")
                continue
            self.stdout.write(message.message_id)
            self.stdout.flush()
