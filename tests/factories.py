"""Plain factory functions and the named personas reused by every test (STYLE.md)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from django.test import TestCase
from django.utils import timezone

from accounts.models import Membership, Structure, StructureDomain, User
from mailboxes.console.services.lifecycle import mailbox_create
from mailboxes.console.services.people import access_set
from mailboxes.models import Mailbox, MailboxAccess

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PSC_SAMPLES = SHARED / "samples" / "psc"
_seq = itertools.count(1)


def psc_sample(name: str) -> dict[str, Any]:
    return json.loads((PSC_SAMPLES / name).read_text(encoding="utf-8"))


def make_structure(
    *,
    name: str = "EHPAD Les Tilleuls",
    finess: str = "690001235",
    domain: str | None = "ehpad-les-tilleuls.mssante.fr",
) -> Structure:
    structure = Structure.objects.create(
        identifier_kind=Structure.IdentifierKind.FINESS_EG, identifier=finess, name=name
    )
    if domain:
        StructureDomain.objects.create(structure=structure, domain=domain)
    return structure


def make_professional(
    *,
    national_id: str | None = None,
    first_name: str = "Claire",
    last_name: str = "Martin",
    profession: str = "10",
    signed_in: bool = True,
) -> User:
    """A professional as after their first Pro Santé Connect sign-in (``signed_in``), or
    only known by national id, as an invitation leaves them."""
    national_id = national_id or f"8997009{next(_seq):05d}"
    user = User.objects.create(
        username=national_id,
        national_id=national_id,
        first_name=first_name,
        last_name=last_name,
        profession_code=profession,
        psc_refreshed_at=timezone.now() if signed_in else None,
    )
    user.set_unusable_password()
    user.save()
    return user


def make_membership(
    user: User, structure: Structure, role: str = Membership.Role.MEMBER
) -> Membership:
    return Membership.objects.create(
        user=user, structure=structure, role=role, source=Membership.Source.INVITATION
    )


def grant(
    mailbox: Mailbox,
    user: User,
    *,
    can_organise: bool = False,
    can_send: bool = False,
    can_manage: bool = False,
    expires_at: datetime | None = None,
) -> MailboxAccess:
    """Rights on ``mailbox`` through the service production uses (``access_set``), making
    ``user`` a member of its structure first when needed: a PER BAL is delegated by its
    holder, an ORG/APP BAL's members are set by the operator's tooling."""
    if not Membership.objects.filter(user=user, structure_id=mailbox.structure_id).exists():
        make_membership(user, Structure.objects.get(pk=mailbox.structure_id))
    return access_set(
        mailbox=mailbox,
        user=user,
        can_organise=can_organise,
        can_send=can_send,
        can_manage=can_manage,
        expires_at=expires_at,
        actor=mailbox.owner if mailbox.kind == Mailbox.Kind.PER else None,
    )


def make_mailbox(
    *,
    structure: Structure,
    kind: str = "PER",
    local_part: str = "claire.martin",
    owner: User | None = None,
    responsible: User | None = None,
    display_name: str = "",
) -> Mailbox:
    """A BAL created through the service, with Dovecot provisioned (on-commit callbacks run)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return mailbox_create(
            structure=structure,
            kind=kind,
            local_part=local_part,
            display_name=display_name or local_part,
            owner=owner,
            responsible=responsible,
            actor=None,
        )


def make_message(
    *,
    subject: str = "Compte rendu de consultation",
    sender: str = "Dr Paul Durand <paul.durand@chu-exemple.mssante.fr>",
    to: str = "claire.martin@ehpad-les-tilleuls.mssante.fr",
    body: str = "Bonjour,\nveuillez trouver le compte rendu.\nCordialement",
    date: str = "Mon, 16 Nov 2026 09:30:00 +0100",
    extra_headers: str = "",
) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{next(_seq)}.test@chu-exemple.mssante.fr>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"{extra_headers}\r\n{body}\r\n"
    ).encode()


def sign_in_operator(client: Any, user: User, password: str) -> None:
    """The break-glass operator signed in as production asks: password at
    /operateur/connexion/, then a TOTP code (a TOTP authenticator is set up first if the
    account has none). Leaves ``client`` with a session that opens the admin."""
    from allauth.mfa.models import Authenticator
    from allauth.mfa.totp.internal.auth import (
        TOTP,
        format_hotp_value,
        generate_totp_secret,
        hotp_value,
        yield_hotp_counters_from_time,
    )
    from allauth.mfa.utils import decrypt

    totp = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    secret = decrypt(totp.data["secret"]) if totp else generate_totp_secret()
    if totp is None:
        TOTP.activate(user, secret)
    step = client.post("/operateur/connexion/", {"login": user.username, "password": password})
    assert step.status_code == 302, "the password was refused"
    code = format_hotp_value(hotp_value(secret, next(yield_hotp_counters_from_time())))
    done = client.post(step["Location"], {"code": code})
    assert done.status_code == 302, "the TOTP code was refused"
