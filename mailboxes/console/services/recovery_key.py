"""The structure's recovery key: the OpenPGP public key every export of its BALs is
encrypted to. Its private half never comes to the portal."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import gnupg
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import Action, actor_label_of, audit_record
from accounts.models import Membership, Structure, User
from mailboxes.console.services.portal_mail import person_named, portal_mail_send, when_text
from mailboxes.models import Mailbox

if TYPE_CHECKING:
    from django.http import HttpRequest

GPG_BINARY = "/usr/bin/gpg"
MAX_KEY_TEXT = 1024 * 1024  # an armoured public key with many signatures stays far below
KEY_SET = Action.RECOVERY_KEY_SET


@contextmanager
def keyring() -> Iterator[gnupg.GPG]:
    """A throwaway GNUPGHOME. ``--no-autostart``: nothing here needs a secret key, so no
    gpg-agent is started (it would outlive the directory)."""
    with tempfile.TemporaryDirectory(prefix="mssante-gpg-") as home:
        yield gnupg.GPG(gpgbinary=GPG_BINARY, gnupghome=home, options=["--no-autostart"])


def _key_refused(
    structure: Structure, actor: User | None, request: HttpRequest | None, code: str
) -> None:
    audit_record(
        action=KEY_SET,
        actor=actor,
        actor_label=actor_label_of(actor),
        target=structure,
        structure=structure,
        success=False,
        error_code=code,
        request=request,
    )


def _validated_key(armored: str) -> tuple[str, str]:
    """(fingerprint, armoured export of the key as gpg read it) or ValidationError."""
    if not armored.strip() or len(armored) > MAX_KEY_TEXT:
        raise ValidationError(
            "Ce texte n'est pas une clé publique OpenPGP : collez le bloc complet, de "
            "« -----BEGIN PGP PUBLIC KEY BLOCK----- » à « -----END PGP PUBLIC KEY BLOCK----- ».",
            code="garbage",
        )
    with keyring() as gpg:
        # --dry-run --import-options import-show: what the text holds, before importing it.
        scanned = list(gpg.scan_keys_mem(armored))
        if any(key["type"] == "sec" for key in scanned) or "PRIVATE KEY BLOCK" in armored:
            raise ValidationError(
                "Ce texte contient une clé secrète (privée). Ne la déposez jamais ici : "
                "déposez uniquement la clé publique de la structure (gpg --armor --export), "
                "et gardez la clé privée hors ligne.",
                code="secret_key",
            )
        public = [key for key in scanned if key["type"] == "pub"]
        if not public:
            raise ValidationError(
                "Ce texte n'est pas une clé publique OpenPGP : collez le bloc complet, de "
                "« -----BEGIN PGP PUBLIC KEY BLOCK----- » à « -----END PGP PUBLIC KEY "
                "BLOCK----- ».",
                code="garbage",
            )
        if len(public) > 1:
            raise ValidationError(
                "Ce texte contient plusieurs clés : déposez une seule clé publique, celle de "
                "la structure.",
                code="several_keys",
            )
        unusable = ValidationError(
            "Cette clé ne permet pas de chiffrer (expirée, révoquée ou sans sous-clé de "
            "chiffrement) : déposez une clé publique valide, capable de chiffrer.",
            code="unusable_key",
        )
        key = public[0]
        # GnuPG colon listing: trust "r" revoked, "e" expired, "i" invalid; an uppercase "E"
        # in the primary key's capabilities means the key as a whole can encrypt now.
        if key["trust"] in ("r", "e", "i", "d") or "E" not in key["cap"]:
            raise unusable
        imported = gpg.import_keys(armored)
        if imported.count != 1 or len(set(imported.fingerprints)) != 1:
            raise unusable
        fingerprint = imported.fingerprints[0]
        probe = gpg.encrypt(b"", [fingerprint], always_trust=True, armor=False)
        if not probe.ok:
            raise unusable
        return fingerprint, str(gpg.export_keys(fingerprint))


def recovery_key_set(
    *, structure: Structure, armored: str, actor: User | None, request: HttpRequest | None = None
) -> Structure:
    """Record the OpenPGP public key that the structure's BAL exports are encrypted to.

    The key is checked in a throwaway keyring: exactly one public key, no secret key material,
    able to encrypt (not expired, not revoked). A previous key is replaced and its fingerprint
    kept (exports made before need its private half). Every director of the structure is told
    by a notice in their personal BAL.
    Raises ValidationError (French; codes garbage, secret_key, several_keys, unusable_key)
    after a failure trace, storing nothing. Traces ``structure.recovery_key_set``.
    """
    try:
        fingerprint, normalized = _validated_key(armored)
    except ValidationError as exc:
        _key_refused(structure, actor, request, exc.code or "invalid")
        raise
    with transaction.atomic():
        structure = Structure.objects.select_for_update().get(pk=structure.pk)
        previous = structure.recovery_key_fingerprint
        structure.recovery_key = normalized
        structure.recovery_key_fingerprint = fingerprint
        structure.recovery_key_uploaded_at = timezone.now()
        fields = ["recovery_key", "recovery_key_fingerprint", "recovery_key_uploaded_at"]
        if previous and previous != fingerprint:
            structure.recovery_key_previous_fingerprint = previous
            fields.append("recovery_key_previous_fingerprint")
        structure.save(update_fields=fields)
        notified, unreachable = _directors_told(structure, actor, previous, fingerprint)
        audit_record(
            action=KEY_SET,
            actor=actor,
            actor_label=actor_label_of(actor),
            target=structure,
            structure=structure,
            request=request,
            details={
                "fingerprint": fingerprint,
                "previous": previous,
                "notified": notified,
                "unreachable": unreachable,
            },
        )
    return structure


def _directors_told(
    structure: Structure, actor: User | None, previous: str, fingerprint: str
) -> tuple[list[str], list[str]]:
    """A notice to every director of the structure, in their personal BAL (the structure's,
    else one they hold elsewhere here). Returns (the BALs notified, the national ids of
    directors without a personal BAL, who cannot be told by mail)."""
    directors = list(
        Membership.objects.filter(structure=structure, role=Membership.Role.DIRECTOR)
        .select_related("user")
        .order_by("user__last_name")
    )
    boxes = Mailbox.objects.filter(
        kind=Mailbox.Kind.PER,
        status=Mailbox.Status.ACTIVE,
        owner__in=[m.user_id for m in directors],
    ).order_by("address")
    chosen: dict[int, Mailbox] = {}
    for box in sorted(boxes, key=lambda b: b.structure_id != structure.pk):
        chosen.setdefault(box.owner_id or 0, box)
    replaced = f"Elle remplace la clé d'empreinte {previous}." if previous else ""
    body = (
        f"Bonjour,\n\nLa clé de recouvrement de {structure.name} a été "
        f"{'remplacée' if previous else 'déposée'} le {when_text(timezone.now())} par "
        f"{person_named(actor)}.\n\nEmpreinte de la nouvelle clé : {fingerprint}\n{replaced}"
        "\n\nLes prochains exports et fermetures de BAL seront chiffrés pour cette clé. "
        "Si ce changement n'est pas voulu, déposez à nouveau la clé de la structure depuis la "
        "console (« Clé de recouvrement ») et vérifiez le journal."
    )
    portal_mail_send(
        to=list(chosen.values()),
        subject=f"Clé de recouvrement de {structure.name} {'remplacée' if previous else 'déposée'}",
        body=body,
    )
    unreachable = [m.user.national_id or "" for m in directors if m.user_id not in chosen]
    return sorted(b.address for b in chosen.values()), unreachable
