"""Print the DNS SRV records (RFC 6186) of every domain we host, as zone-file lines, for the
operator's DNS (SC.MSS/CONF.04): ``manage.py print_srv_records [domain ...]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mailboxes.software.autoconfig import hosted_domains, srv_records


class Command(BaseCommand):
    help = "Affiche les enregistrements DNS SRV (RFC 6186) des domaines hébergés."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domains", nargs="*", help="par défaut : tous les domaines hébergés")

    def handle(self, *args: Any, **options: Any) -> None:
        for line in srv_records(options["domains"] or hosted_domains()):
            self.stdout.write(line)
