"""Reading the signed operator whitelist: signature, signer, entries.

Format and signature (../shared/reference/mssante-spec.md §1.2): root `ListeBlancheMSSante`
in namespace https://listeblanche.mssante.fr/schema, `Domaine` entries (Nom,
DNCertificatOperateur, contacts, DateMAJ), an enveloped XMLDSig (RSA-SHA256, exclusive C14N)
with the signer certificate in KeyInfo. Verified with signxml; entries are read from the
*signed* tree signxml returns, never from the raw document (no signature-wrapping).

Trust is a key, not a name (STYLE.md): what the document says about its signer (the subject
and issuer of the certificate it carries) proves nothing, anyone can make such a certificate.
The certificate must chain to a CA we configured (IGC-Santé) and its key must be one we pinned.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

if TYPE_CHECKING:
    from lxml import etree
# lxml and signxml are imported where a list is parsed (whitelist_parse): every process that
# checks a peer against the whitelist imports this module, and they cost it ~4 MB of memory.

NS = "{https://listeblanche.mssante.fr/schema}"
DSIG = "{http://www.w3.org/2000/09/xmldsig#}"
MAX_BYTES = 50 * 1024 * 1024  # the 2025 list is 3.6 MB


class WhitelistError(ValueError):
    """The document is not a trustworthy whitelist; the message says why (French)."""


@dataclass(frozen=True)
class Entry:
    domain: str
    dn: str
    dn_key: str
    description: str
    responsible_contact: str
    support_contact: str
    updated_at: datetime | None


@dataclass(frozen=True)
class Whitelist:
    generated_at: datetime
    signer_subject: str
    signer_pin: str  # spki_pin of the key that verified the signature
    sha256: str
    entries: list[Entry]
    rejected: list[str]  # entries skipped, with the reason (a signed list is not refused for one)

    @property
    def domains(self) -> set[str]:
        return {e.domain for e in self.entries}

    @property
    def dns(self) -> set[str]:
        """Distinct DNs as published (391 in the 2025-02-28 list)."""
        return {e.dn for e in self.entries}

    @property
    def dn_keys(self) -> set[str]:
        """Distinct certificates once DNs are parsed (the same DN is sometimes published with
        other spacing, case or quoting: 382 in the 2025-02-28 list)."""
        return {e.dn_key for e in self.entries}


def _split_rdns(dn: str) -> list[tuple[str, str]]:
    """RDNs of a DN string: RFC 4514 with the leniencies of the published list (RFC 1779
    quoted values such as O="C.H. DE CADILLAC", "," or ", " separators). Raises ValueError."""
    pairs: list[tuple[str, str]] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in dn + ",":
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch in ",;+" and not quoted:
            item = "".join(buf).strip()
            buf = []
            if not item:
                continue
            kind, sep, value = item.partition("=")
            if not sep or not kind.strip():
                raise ValueError(f"not a DN component: {item!r}")
            pairs.append((kind.strip().upper(), value.strip()))
        else:
            buf.append(ch)
    if quoted or not pairs:
        raise ValueError("unbalanced quotes or empty DN")
    return pairs


def dn_key(dn: str | x509.Name) -> str:
    """A comparison key for a distinguished name: its RDNs parsed, values with whitespace
    collapsed and case folded (caseIgnoreMatch), in a stable order. The published list mixes
    separators and quoting styles (§1.2 quirks), so raw strings are never compared."""
    if isinstance(dn, x509.Name):
        pairs = [
            (
                a.rfc4514_attribute_name.upper(),
                a.value if isinstance(a.value, str) else a.value.hex(),
            )
            for a in dn
        ]
    else:
        pairs = _split_rdns(dn.strip())
    return "\n".join(
        sorted(f"{kind}={' '.join(value.split()).casefold()}" for kind, value in pairs)
    )


def spki_pin(key: x509.Certificate | PublicKeyTypes) -> str:
    """The pin of a public key (or of a certificate's): the SHA-256 of its DER
    SubjectPublicKeyInfo, in base64 (RFC 7469 §2.4, ``pin-sha256``). The same as
    ``openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256
    -binary | base64``."""
    public = key.public_key() if isinstance(key, x509.Certificate) else key
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _signer(root: etree._Element) -> x509.Certificate:
    node = root.find(f"{DSIG}Signature/{DSIG}KeyInfo/{DSIG}X509Data/{DSIG}X509Certificate")
    if node is None or not (node.text or "").strip():
        raise WhitelistError("La liste blanche n'est pas signée (certificat du signataire absent).")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join(node.text.split())))
    except ValueError as exc:
        raise WhitelistError(
            "Le certificat du signataire de la liste blanche est illisible."
        ) from exc


def _verification_time(cert: x509.Certificate, at: datetime, tolerance: timedelta) -> datetime:
    """``at``, or the nearest end of the signer certificate's validity when ``at`` is outside
    it by no more than ``tolerance`` (a clock behind or ahead of ANS's, a renewal under way).
    Never the list's own date: a document does not choose when it is judged."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    when = min(max(at, start), end)
    if abs(when - at) > tolerance:
        raise WhitelistError(
            "Le certificat du signataire de la liste blanche n'est pas valide à cette date "
            f"(valide du {start:%d/%m/%Y %H:%M} au {end:%d/%m/%Y %H:%M} UTC) : "
            f"{cert.subject.rfc4514_string()}."
        )
    return when


def parse_signed(
    data: bytes,
    *,
    pins: Collection[str],
    ca_bundle: str,
    at: datetime,
    tolerance: timedelta = timedelta(0),
) -> Whitelist:
    """Verify and read a whitelist document. Raises WhitelistError.

    The signer's certificate (carried in KeyInfo) must chain to a CA of ``ca_bundle`` (a PEM
    file: the IGC-Santé chain, never the public web CAs) and the key that verifies the signature
    must be one of ``pins`` (``spki_pin`` values). Both are checked at ``at`` (now), with
    ``tolerance`` around the certificate's validity (``_verification_time``).
    """
    from lxml import etree
    from signxml import SignatureConfiguration, XMLVerifier
    from signxml.exceptions import InvalidCertificate, InvalidInput, InvalidSignature

    if len(data) > MAX_BYTES:
        raise WhitelistError("Le fichier de liste blanche est anormalement volumineux.")
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise WhitelistError(f"La liste blanche n'est pas un XML valide : {exc}") from exc
    if root.tag != f"{NS}ListeBlancheMSSante":
        raise WhitelistError(
            "Ce document n'est pas une liste blanche MSSanté (élément racine inattendu)."
        )
    generated = _date(root.findtext(f"{NS}DateDeGeneration"))
    if generated is None:
        raise WhitelistError("La liste blanche n'a pas de date de génération valide.")
    cert = _signer(root)
    signer = f"{cert.subject.rfc4514_string()} (émis par {cert.issuer.rfc4514_string()})"
    when = _verification_time(cert, at, tolerance)
    try:
        x509.load_pem_x509_certificates(Path(ca_bundle).read_bytes())
    except (OSError, ValueError) as exc:  # missing, unreadable, or no certificate in it
        raise WhitelistError(
            f"Autorités de confiance de la liste blanche illisibles ({ca_bundle}) : {exc}"
        ) from exc
    try:
        # ca_pem_file: signxml checks the chain from the certificates in KeyInfo to this
        # bundle (its default would be certifi's public web CAs).
        verified = XMLVerifier().verify(
            data,
            ca_pem_file=ca_bundle,
            expect_config=SignatureConfiguration(verification_time=when),
        )
    except InvalidCertificate as exc:
        raise WhitelistError(
            "Le certificat du signataire de la liste blanche ne remonte pas à une autorité de "
            f"confiance configurée (WHITELIST_SIGNER_CA_BUNDLE) : {signer} ({exc})."
        ) from exc
    except (InvalidSignature, InvalidInput) as exc:
        raise WhitelistError(f"Signature de la liste blanche invalide : {exc}") from exc
    if isinstance(verified, list):  # only with expect_references > 1, which we do not ask
        raise WhitelistError("La liste blanche porte plusieurs références signées.")
    pin = spki_pin(load_pem_public_key(verified.signature_key))
    if pin not in pins:
        raise WhitelistError(
            f"Clé du signataire non épinglée : {signer}, empreinte SPKI SHA-256 {pin}. "
            "Si l'ANS a changé de clé, ajoutez cette empreinte à WHITELIST_SIGNER_PINS "
            "après l'avoir vérifiée auprès d'elle."
        )
    signed = verified.signed_xml
    if signed is None or signed.tag != f"{NS}ListeBlancheMSSante":
        raise WhitelistError("La signature ne couvre pas la liste entière.")

    entries = []
    rejected: list[str] = []
    for node in signed.iter(f"{NS}Domaine"):
        domain = (node.findtext(f"{NS}Nom") or "").strip().lower()
        dn = " ".join((node.findtext(f"{NS}DNCertificatOperateur") or "").split())
        if not domain or not dn:
            raise WhitelistError(f"Entrée incomplète dans la liste blanche (domaine « {domain} »).")
        try:
            key = dn_key(dn)
        except ValueError:
            rejected.append(f"{domain} : DN illisible « {dn} »")
            continue
        entries.append(
            Entry(
                domain=domain,
                dn=dn,
                dn_key=key,
                description=(node.findtext(f"{NS}Description") or "").strip()[:500],
                responsible_contact=" ".join(
                    (node.findtext(f"{NS}ResponsableContact") or "").split()
                )[:500],
                support_contact=" ".join((node.findtext(f"{NS}SupportContact") or "").split())[
                    :500
                ],
                updated_at=_date(node.findtext(f"{NS}DateMAJ")),
            )
        )
    if not entries:
        raise WhitelistError("La liste blanche ne contient aucun domaine.")
    return Whitelist(
        generated_at=generated,
        signer_subject=cert.subject.rfc4514_string(),
        signer_pin=pin,
        sha256=hashlib.sha256(data).hexdigest(),
        entries=entries,
        rejected=rejected,
    )
