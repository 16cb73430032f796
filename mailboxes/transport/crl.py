"""Certificate revocation lists (IGC-Santé CRLs) for the gateway and the relay.

Rules: a peer certificate must be refused when it is revoked according to the IGC-Santé CRL,
refreshed daily (mssante-spec §1.4, inbound step 1 and outbound step 3); a client checks that
the operator's server certificate is not revoked (Référentiel #2 ECO.1.1.5 and ECO.1.1.6); the
last non-expired CRL is kept (Ségur SC.MSS/CONF.22).

What is in force is one PEM file, ``TLS_CRL_FILE``, holding one CRL per issuing CA. Only the
sync (``mailboxes.transport.crl_sync.crl_sync``) writes it, after every CRL it fetched was parsed,
found signed by a CA of the bundles and not expired; it replaces the file atomically, so a
reader sees the old file or the new one, never a mix. A failed sync leaves the last good file.

TLS contexts (``load_into``): when the file exists, they load it and set
``VERIFY_CRL_CHECK_LEAF``: OpenSSL looks the peer's own certificate up in its issuer's CRL.
OpenSSL then also refuses a peer whose issuer has no CRL in the file ("unable to get
certificate CRL"), so ``TLS_CRL_URLS`` must list the CRL of every CA that issues operator
certificates (for IGC-Santé, « AC IGC-SANTE ELEMENTAIRE ORGANISATIONS »). When the file does
not exist, nothing is checked (a warning is logged; the production system check asks for
``TLS_CRL_URLS``).

When the CRL in force expires (decision): **fail closed**. It stays loaded and OpenSSL refuses
every handshake ("CRL has expired") until a fresh one is synced. The alternative, dropping
revocation checks, would let a revoked certificate in exactly when the revocation source is
unreachable. Refusing loses no mail: a TLS failure is a temporary failure for the sending MTA
(it keeps the message and retries, RFC 5321 §4.5.4.1), and our relay records it as temporary
too (the message stays queued and is retried, and bounces only after RELAY_LIFETIME_HOURS).
To keep that from happening, the sync runs several times a day and ``crl_expiry_check``
alerts (error log, the operator's alert channel) ``TLS_CRL_ALERT_HOURS`` ahead, and loudly once
it has expired.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

logger = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024 * 1024  # IGC-Santé CRLs run to a few MB
PEM_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
CLOCK_SKEW = dt.timedelta(minutes=10)  # a CRL published "now" by a slightly fast clock

Stamp = tuple[int, int, int]
ISSUER_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    dsa.DSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)


class CrlError(ValueError):
    """A CRL that cannot be trusted or used; the message says why, in French."""


@dataclass(frozen=True)
class CrlInfo:
    issuer: str  # RFC 4514
    last_update: dt.datetime
    next_update: dt.datetime
    revoked: int


def parse(data: bytes, source: str) -> list[x509.CertificateRevocationList]:
    """The CRLs in ``data``: one DER CRL, or PEM holding one or more. Raises CrlError."""
    try:
        if b"-----BEGIN" in data[:4096]:
            blocks = PEM_BLOCK.findall(data)
            if not blocks:
                raise ValueError("no X509 CRL block")
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError as exc:
        raise CrlError(
            f"{source} n'est pas une liste de révocation (LCR) lisible, ni DER ni PEM."
        ) from exc


def load_authorities(bundles: list[str]) -> list[x509.Certificate]:
    """The CA certificates of the PEM ``bundles`` (paths; empty ones skipped). Raises CrlError."""
    authorities: list[x509.Certificate] = []
    for bundle in dict.fromkeys(b for b in bundles if b):
        try:
            authorities += x509.load_pem_x509_certificates(Path(bundle).read_bytes())
        except (OSError, ValueError) as exc:
            raise CrlError(f"Bundle d'AC illisible ({bundle}) : {exc}") from exc
    return authorities


def info(crl: x509.CertificateRevocationList) -> CrlInfo:
    next_update = crl.next_update_utc
    if next_update is None:  # RFC 5280 §5.1.2.5: conforming CAs always include it
        raise CrlError(
            f"La LCR de {crl.issuer.rfc4514_string()} n'a pas de date de prochaine mise à jour."
        )
    return CrlInfo(
        issuer=crl.issuer.rfc4514_string(),
        last_update=crl.last_update_utc,
        next_update=next_update,
        revoked=len(crl),
    )


def verify(
    crl: x509.CertificateRevocationList,
    authorities: list[x509.Certificate],
    *,
    source: str,
    now: dt.datetime | None = None,
) -> CrlInfo:
    """Check that ``crl`` is signed by one of ``authorities`` (a CA of the bundle whose subject
    is the CRL's issuer) and is in its validity period. Returns its summary; raises CrlError."""
    now = now or dt.datetime.now(dt.UTC)
    issuer = crl.issuer.rfc4514_string()
    candidates = [ca for ca in authorities if ca.subject == crl.issuer]
    if not candidates:
        raise CrlError(
            f"LCR de {source} refusée : son émetteur ({issuer}) n'est pas une AC de confiance."
        )
    signed = False
    for ca in candidates:
        key = ca.public_key()
        if isinstance(key, ISSUER_KEYS):
            signed = signed or crl.is_signature_valid(key)
    if not signed:
        raise CrlError(
            f"LCR de {source} refusée : signature invalide (fichier altéré ou mauvaise AC "
            f"pour {issuer})."
        )
    summary = info(crl)
    if summary.next_update <= now:
        raise CrlError(
            f"LCR de {source} refusée : expirée depuis le "
            f"{summary.next_update:%d/%m/%Y %H:%M} UTC (prochaine mise à jour dépassée)."
        )
    if summary.last_update > now + CLOCK_SKEW:
        raise CrlError(
            f"LCR de {source} refusée : émise dans le futur "
            f"({summary.last_update:%d/%m/%Y %H:%M} UTC), vérifiez l'horloge."
        )
    return summary


def read_in_force(path: str) -> list[CrlInfo]:
    """Summaries of the CRLs in the file in force (empty when there is none). Raises CrlError
    when the file exists but cannot be read."""
    if not path:
        return []
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CrlError(
            f"Lecture impossible de la LCR en vigueur ({path}) : {exc.strerror}"
        ) from exc
    return [info(crl) for crl in parse(data, path)]


def revoked_in_force(path: str) -> set[tuple[str, int]]:
    """(issuer RFC 4514, serial) of every certificate the CRLs of the file in force revoke;
    empty without a file. Raises CrlError when the file exists but cannot be read."""
    if not path:
        return set()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise CrlError(
            f"Lecture impossible de la LCR en vigueur ({path}) : {exc.strerror}"
        ) from exc
    return {
        (crl.issuer.rfc4514_string(), entry.serial_number)
        for crl in parse(data, path)
        for entry in crl
    }


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: a temporary file in the same folder, flushed to disk,
    then renamed over the old one (readers see the old or the new file, never a mix)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(0o644)  # public data: the gateway and worker users read it
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def file_stamp(path: str) -> Stamp | None:
    """What identifies one version of the file (replaced atomically: a new inode), or None."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def load_into(context: ssl.SSLContext, crl_file: str) -> bool:
    """Make ``context`` refuse a peer whose certificate the CRLs in ``crl_file`` revoke (see the
    module docstring). Returns False, with a warning, when there is no file: no revocation
    check. Raises ssl.SSLError/OSError when the file cannot be loaded (the caller keeps what
    it had)."""
    if not crl_file:
        return False
    if file_stamp(crl_file) is None:
        logger.warning("no CRL in force (%s): certificate revocation is not checked", crl_file)
        return False
    context.load_verify_locations(cafile=crl_file)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    try:
        expired = [c for c in read_in_force(crl_file) if c.next_update <= dt.datetime.now(dt.UTC)]
    except CrlError as exc:
        logger.error("CRL in force unreadable: %s", exc)
        return True
    for crl in expired:
        logger.error(
            "CRL in force for %s expired on %s: every peer certificate it covers is refused "
            "until a fresh CRL is synced (manage.py sync_crl)",
            crl.issuer,
            crl.next_update.isoformat(),
        )
    return True
