"""Write a signed operator whitelist for tests and the two-operator trust space.

Same format as the national file (`../shared/samples/whitelist/`): root ListeBlancheMSSante
in https://listeblanche.mssante.fr/schema, DateDeGeneration, Domaine entries, an enveloped
XMLDSig (RSA-SHA256, exclusive C14N) with the signer certificate in KeyInfo, made with
signxml, the library that verifies it (annuaire/whitelist.py). Signed with the test PKI's
« signer » certificate; instances that trust it take the test CA as the chain's anchor and pin
the signer's key (``trust_env``), as production takes IGC-Santé and pins ANS's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from lxml import etree
from signxml import SignatureMethod, XMLSigner
from signxml.algorithms import CanonicalizationMethod

from annuaire.whitelist import spki_pin

NS = "https://listeblanche.mssante.fr/schema"
DSIG = "{http://www.w3.org/2000/09/xmldsig#}"


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
    path.write_bytes(_sign(root, cert=cert, key=key))


def resign(data: bytes, *, cert: Path, key: Path) -> bytes:
    """The whitelist document ``data`` (the national file, say) with its signature replaced by
    one made with ``cert`` and ``key``: the same entries, another signer."""
    root = etree.fromstring(data)
    for signature in root.findall(f"{DSIG}Signature"):
        root.remove(signature)
    return _sign(root, cert=cert, key=key)


def _sign(root: etree._Element, *, cert: Path, key: Path) -> bytes:
    signed = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(root, key=key.read_bytes(), cert=cert.read_text())
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


def pin_of(cert: Path) -> str:
    """The pin (SPKI SHA-256) of the key of ``cert``, as WHITELIST_SIGNER_PINS lists it."""
    return spki_pin(x509.load_pem_x509_certificate(cert.read_bytes()))


def trust_env(pki: Path) -> dict[str, str]:
    """The settings of an instance that trusts the lists signed by the test PKI in folder
    ``pki``: its CA is the chain's anchor, its « signer » key is the one pinned."""
    return {
        "WHITELIST_SIGNER_CA_BUNDLE": str(pki / "ca.crt"),
        "WHITELIST_SIGNER_PINS": pin_of(pki / "signer.crt"),
    }


def dn_of(cert: Path) -> str:
    return x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
