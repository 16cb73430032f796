"""Bind the test PKI's software certificate (PORTAL_VAR_DIR/pki/software.crt) to the demo APP
BAL of the first demo structure, as its director would in the console: `make run` then
lets anyone open that BAL with SASL EXTERNAL (README, « Logiciels et clients »). Idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from devtools.demo.data import APP_BAL, DIRECTORS, STRUCTURES
from mailboxes.console.services.certificates import certificate_bind
from mailboxes.models import AppCertificate, Mailbox


class Command(BaseCommand):
    help = "Lie le certificat logiciel de la PKI de test à la BAL applicative de démonstration."

    def handle(self, *args: Any, **options: Any) -> None:
        cert = Path(settings.VAR_DIR) / "pki" / "software.crt"
        address = f"{APP_BAL[0]}@{STRUCTURES[0].domain}"
        box = Mailbox.objects.filter(address=address).first()
        if box is None or not cert.exists():
            raise CommandError(f"Il faut la démo (load_demo) et la PKI de test ({cert}).")
        if AppCertificate.objects.filter(mailbox=box).exists():
            self.stdout.write(f"Certificat logiciel déjà lié à {address}.")
            return
        director = User.objects.filter(national_id=next(iter(DIRECTORS))).first()
        try:
            bound = certificate_bind(mailbox=box, data=cert.read_bytes(), actor=director)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Certificat « {bound.common_name} » lié à {address} ({cert}).")
