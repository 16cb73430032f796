"""Print a Pro Santé Connect mock token for a test professional, as a care software gets it
(« logiciel métier de test » client): ``manage.py psc_token 899700120019``."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.psc_mock.cli import token_for, token_refresh, token_revoke


class Command(BaseCommand):
    help = "Obtient un jeton PSC de la maquette pour une identité de test (API LPS)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("national_id", nargs="?", help="identifiant national (RPPS)")
        parser.add_argument("--url", default=settings.SITE_URL, help="adresse du portail")
        parser.add_argument("--refresh", metavar="REFRESH_TOKEN", help="rafraîchir ce jeton")
        parser.add_argument("--revoke", metavar="TOKEN", help="révoquer ce jeton et sa session")
        parser.add_argument("--json", action="store_true", help="la réponse entière en JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        base = options["url"].rstrip("/")
        try:
            if options["revoke"]:
                token_revoke(base, options["revoke"])
                self.stdout.write("Jeton révoqué.")
                return
            if options["refresh"]:
                answer = token_refresh(base, options["refresh"])
            elif options["national_id"]:
                answer = token_for(base, options["national_id"])
            else:
                raise CommandError("Donnez un identifiant national, --refresh ou --revoke.")
        except (RuntimeError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            json.dumps(answer, indent=2) if options["json"] else answer["access_token"]
        )
