"""Write the private Dovecot instance's configuration and BAL list (run before Dovecot starts)."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailboxes.console.services.lifecycle import dovecot_backend_users_sync, dovecot_users_sync
from mailboxes.store import dovecot


class Command(BaseCommand):
    help = "Génère la configuration de l'instance Dovecot privée et la liste des BAL servies."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            metavar="NOM",
            help="Instance d'un serveur de DOVECOT_BACKENDS (derrière le proxy) : ses ports "
            "et ses seules BAL.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        instance = dovecot.instance_from_settings()
        name = options.get("backend")
        try:
            if name:
                backend = dovecot.backends_from_settings().get(name)
                if backend is None:
                    raise CommandError(f"« {name} » n'est pas dans DOVECOT_BACKENDS.")
                instance = dataclasses.replace(
                    instance, imap_port=backend.imap_port, lmtp_port=backend.lmtp_port, proxy=False
                )
            dovecot.write_instance(
                instance,
                master_user=settings.DOVECOT_MASTER_USER,
                master_password=settings.DOVECOT_MASTER_PASSWORD,
            )
        except dovecot.InstanceError as exc:
            raise CommandError(str(exc)) from exc
        count = dovecot_backend_users_sync(name) if name else dovecot_users_sync()
        self.stdout.write(
            f"Dovecot : {instance.config_path} ({count} BAL, "
            f"IMAP {instance.imap_port}, sockets {instance.lmtp_socket} {instance.imap_socket})"
        )
