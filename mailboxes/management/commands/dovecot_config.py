"""Write the private Dovecot instance's configuration and BAL list (run before Dovecot starts)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailboxes.console.services.lifecycle import dovecot_users_sync
from mailboxes.store import dovecot


class Command(BaseCommand):
    help = "Génère la configuration de l'instance Dovecot privée et la liste des BAL servies."

    def handle(self, *args: Any, **options: Any) -> None:
        instance = dovecot.instance_from_settings()
        try:
            dovecot.write_instance(
                instance,
                master_user=settings.DOVECOT_MASTER_USER,
                master_password=settings.DOVECOT_MASTER_PASSWORD,
            )
        except dovecot.InstanceError as exc:
            raise CommandError(str(exc)) from exc
        count = dovecot_users_sync()
        self.stdout.write(
            f"Dovecot : {instance.config_path} ({count} BAL, "
            f"IMAP {instance.imap_port}, sockets {instance.lmtp_socket} {instance.imap_socket})"
        )
