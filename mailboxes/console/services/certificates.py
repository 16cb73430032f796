"""The certificates of the software that own an APP BAL (API LPS, mssante-spec §2.2): the
structure's director binds a software's TLS client certificate to one of its APP BALs, and the
software then logs in with SASL EXTERNAL (mailboxes.software.certificates), without a token or
a password.

A certificate is accepted only when it would be accepted at login: a client certificate
(not a CA) signed by a CA of LPS_CLIENT_CA_BUNDLE (IGC-Santé in production, the test PKI
here), valid today, with a common name (CN). IMAP finds the binding by CN (Dovecot 2.3 hands
its passdb the CN only), so one CN opens one BAL: a second BAL for the same CN is refused.
Unbinding ends the BAL's open IMAP sessions at once (``doveadm kick``) and refuses the next
SMTP command of an open submission session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.audit import Action, audit_record
from accounts.models import User
from mailboxes.models import AppCertificate, Mailbox
from mailboxes.store import dovecot
from mailboxes.transport import crl

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

MAX_CERTIFICATE_BYTES = 64 * 1024  # a certificate is a few KB; a bigger upload is not one
MAX_PER_MAILBOX = 10  # the software's current and next certificate, and some slack


def fingerprint_of(der: bytes) -> str:
    """SHA-256 of the certificate (DER), lowercase hex, as `openssl x509 -fingerprint
    -sha256` shows it without the colons."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_display(fingerprint: str) -> str:
    return ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2)).upper()


def certificate_parse(data: bytes) -> x509.Certificate:
    """One certificate from an upload (PEM or DER). Raises ValidationError (French) for
    anything else: a key, a chain of several certificates, garbage, an empty file."""
    if not data or len(data) > MAX_CERTIFICATE_BYTES:
        raise ValidationError("Le fichier n'est pas un certificat (PEM ou DER, quelques Ko).")
    if b"PRIVATE KEY" in data:
        raise ValidationError(
            "Ce fichier contient une clé privée : ne la transmettez jamais, déposez seulement "
            "le certificat."
        )
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
            if len(certificates) != 1:
                raise ValidationError(
                    "Déposez un seul certificat, celui du logiciel, sans la chaîne de l'autorité."
                )
            return certificates[0]
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise ValidationError("Le fichier n'est pas un certificat lisible (PEM ou DER).") from None


def _trusted_cas() -> list[x509.Certificate]:
    path = settings.LPS_CLIENT_CA_BUNDLE
    try:
        with open(path, "rb") as handle:
            return x509.load_pem_x509_certificates(handle.read())
    except (OSError, ValueError) as exc:
        logger.error("LPS_CLIENT_CA_BUNDLE unreadable (%s): %s", path, exc)
        return []


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def common_name_of(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def certificate_check(cert: x509.Certificate, *, now: dt.datetime | None = None) -> str:
    """What the login will check, said before binding: returns the CN, or raises
    ValidationError naming what is wrong."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            raise ValidationError("C'est le certificat d'une autorité : déposez celui du logiciel.")
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            raise ValidationError(
                "Ce certificat ne permet pas l'authentification d'un client TLS "
                "(usage « clientAuth » absent)."
            )
    except x509.ExtensionNotFound:
        pass
    if cert.not_valid_after_utc <= now:
        raise ValidationError(f"Ce certificat a expiré le {cert.not_valid_after_utc:%d/%m/%Y}.")
    if cert.not_valid_before_utc > now:
        raise ValidationError(
            f"Ce certificat n'est valable qu'à partir du {cert.not_valid_before_utc:%d/%m/%Y}."
        )
    if not any(_signed_by(cert, ca) for ca in _trusted_cas()):
        raise ValidationError(
            "Ce certificat n'est pas délivré par une autorité reconnue pour les logiciels "
            "(IGC-Santé)."
        )
    try:
        revoked = crl.revoked_in_force(settings.TLS_CRL_FILE)
    except crl.CrlError:
        revoked = set()
    if (cert.issuer.rfc4514_string(), cert.serial_number) in revoked:
        raise ValidationError("Ce certificat est révoqué (liste de révocation de l'autorité).")
    cn = common_name_of(cert).strip()
    if not cn:
        raise ValidationError("Ce certificat ne porte pas de nom commun (CN).")
    return cn


@transaction.atomic
def certificate_bind(
    *, mailbox: Mailbox, data: bytes, actor: User | None, request: HttpRequest | None = None
) -> AppCertificate:
    """Bind the certificate in ``data`` (PEM or DER) to the APP BAL ``mailbox``. Raises
    ValidationError (French) when it is not an APP BAL, when the certificate would be refused
    at login, is already bound, or when its CN already opens another BAL. Traced
    (``software.certificate_bound``)."""
    if mailbox.kind != Mailbox.Kind.APP:
        raise ValidationError("Seule une BAL applicative s'ouvre avec le certificat d'un logiciel.")
    if mailbox.status == Mailbox.Status.CLOSED:
        raise ValidationError("Cette BAL est fermée.")
    cert = certificate_parse(data)
    cn = certificate_check(cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    fingerprint = fingerprint_of(der)
    # Serialise the bindings of one CN: two directors binding the same CN at once must not
    # both succeed.
    existing = (
        AppCertificate.objects.select_for_update().filter(common_name=cn).select_related("mailbox")
    )
    for other in existing:
        if other.fingerprint == fingerprint:
            raise ValidationError("Ce certificat est déjà lié à une BAL applicative.")
        if other.mailbox_id != mailbox.pk:
            raise ValidationError(
                f"Un autre certificat au même nom (CN « {cn} ») ouvre déjà une autre BAL : "
                "un nom ne peut ouvrir qu'une BAL."
            )
    if AppCertificate.objects.filter(mailbox=mailbox).count() >= MAX_PER_MAILBOX:
        raise ValidationError(
            f"Une BAL applicative a au plus {MAX_PER_MAILBOX} certificats : retirez-en un."
        )
    bound = AppCertificate.objects.create(
        mailbox=mailbox,
        fingerprint=fingerprint,
        common_name=cn[:255],
        subject=cert.subject.rfc4514_string()[:1000],
        issuer=cert.issuer.rfc4514_string()[:1000],
        serial=format(cert.serial_number, "x")[:64],
        not_after=cert.not_valid_after_utc,
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        created_by=actor,
    )
    audit_record(
        action=Action.SOFTWARE_CERTIFICATE_BOUND,
        actor=actor,
        target=mailbox,
        structure=mailbox.structure,
        request=request,
        details={"common_name": cn[:255], "fingerprint": fingerprint},
    )
    return bound


def certificate_unbind(
    *,
    certificate: AppCertificate,
    actor: User,
    request: HttpRequest | None = None,
    kick: Callable[[str], None] | None = None,
) -> None:
    """Remove the binding: the certificate opens nothing from now on. The BAL's open IMAP
    sessions are ended after the commit (``kick(address)``, default ``doveadm kick``: a
    software with a token or another certificate reconnects), a submission session is refused
    at its next command. Traced (``software.certificate_unbound``)."""
    mailbox = certificate.mailbox
    with transaction.atomic():
        audit_record(
            action=Action.SOFTWARE_CERTIFICATE_UNBOUND,
            actor=actor,
            target=mailbox,
            structure=mailbox.structure,
            request=request,
            details={
                "common_name": certificate.common_name,
                "fingerprint": certificate.fingerprint,
            },
        )
        certificate.delete()
        transaction.on_commit(lambda: (kick or dovecot.sessions_kick)(mailbox.address))
