"""Write a signed operator whitelist for tests and the two-operator trust space.

Same format as the national file (`../shared/samples/whitelist/`): root ListeBlancheMSSante
in https://listeblanche.mssante.fr/schema, DateDeGeneration, Domaine entries, an enveloped
XMLDSig (RSA-SHA256, exclusive C14N) with the signer certificate in KeyInfo, made with
signxml, the library that verifies it (annuaire/whitelist.py). Signed with the test PKI's
« signer » certificate; instances that trust it pin its subject and issuer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from lxml import etree
from signxml import SignatureMethod, XMLSigner
from signxml.algorithms import CanonicalizationMethod

NS = "https://listeblanche.mssante.fr/schema"


@dataclass(frozen=True)
class Listed:
    domain: str
    dn: str
    description: str = ""


def _child(parent: etree._Element, tag: str, text: str) -> None:
    etree.SubElement(parent, f"{{{NS}}}{tag}").text = text


def write_signed_whitelist(path: Path, entries: list[Listed], *, cert: Path, key: Path) -> None:
    """Write ``entries`` as a signed whitelist to ``path``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    root = etree.Element(f"{{{NS}}}ListeBlancheMSSante", nsmap={None: NS})
    _child(root, "DateDeGeneration", now)
    domains = etree.SubElement(root, f"{{{NS}}}ListeDomaines")
    for entry in entries:
        node = etree.SubElement(domains, f"{{{NS}}}Domaine")
        _child(node, "Nom", entry.domain)
        _child(node, "Description", entry.description or f"Domaine de test {entry.domain}")
        _child(node, "DNCertificatOperateur", entry.dn)
        _child(node, "ResponsableContact", "exploitation@operateur.test")
        _child(node, "SupportContact", "support@operateur.test")
        _child(node, "DateMAJ", now)
    signed = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(root, key=key.read_bytes(), cert=cert.read_text())
    path.write_bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


def subject_and_issuer(cert: Path) -> tuple[str, str]:
    """The DNs an instance pins to trust lists signed with ``cert``."""
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    return loaded.subject.rfc4514_string(), loaded.issuer.rfc4514_string()


def dn_of(cert: Path) -> str:
    return x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
