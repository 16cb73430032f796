"""Load the demo structures and professionals (idempotent; run by `make run`)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Membership, Structure, User
from accounts.psc.claims import parse_userinfo
from accounts.services import membership_set_role, structure_create, user_sync_from_psc
from devtools.demo.data import DIRECTORS, STRUCTURES
from devtools.psc_mock.identities import load_identities


class Command(BaseCommand):
    help = "Charge les structures et professionnels de démonstration (idempotent)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        created = 0
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
                created += 1
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
        self.stdout.write(
            self.style.SUCCESS(
                f"Démonstration prête : {Structure.objects.count()} structures ({created} créées), "
                f"{User.objects.exclude(national_id=None).count()} professionnels."
            )
        )
