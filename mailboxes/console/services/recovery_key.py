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

from accounts.audit import Action, audit_record
from accounts.models import Structure, User

if TYPE_CHECKING:
    from django.http import HttpRequest

GPG_BINARY = "/usr/bin/gpg"
MAX_KEY_TEXT = 1024 * 1024  # an armoured public key with many signatures stays far below
KEY_SET = Action.RECOVERY_KEY_SET


def _actor_label(actor: User | None) -> str:
    return "" if actor else "systeme"


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
        actor_label=_actor_label(actor),
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
    able to encrypt (not expired, not revoked). A previous key is replaced.
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
        structure.save(
            update_fields=["recovery_key", "recovery_key_fingerprint", "recovery_key_uploaded_at"]
        )
        audit_record(
            action=KEY_SET,
            actor=actor,
            actor_label=_actor_label(actor),
            target=structure,
            structure=structure,
            request=request,
            details={"fingerprint": fingerprint, "previous": previous},
        )
    return structure
