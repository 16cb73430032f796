"""XML from a message, parsed without trusting it.

defusedxml is not installed; lxml is, and is told the same things: no entity resolution, no
DTD loaded, no network, and a document that declares a DOCTYPE at all is refused (entity
declarations, hence XXE and « billion laughs », can only live there). ``huge_tree`` is on: a
level-1 CDA carries its PDF as one base64 text node, and libxml2 refuses a text node over
10 MB otherwise (a 7.5 MB PDF); the size of what reaches the parser is capped by the caller
(xdm.MAX_ENTRY_SIZE).
"""

from __future__ import annotations

from lxml import etree

_DTD = "{what} déclare une DTD (entités externes ou en cascade possibles) : refusé."


class UnsafeXml(ValueError):
    """The XML was refused or is not well-formed; ``str(exc)`` is a French explanation."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=True,
        remove_comments=True,
        remove_pis=True,
    )


def parse_xml(data: bytes, *, what: str) -> etree._Element:
    """The root element of ``data``. Raises UnsafeXml (naming ``what``) for a DOCTYPE, an
    entity reference or XML that is not well-formed."""
    # Refused before parsing: libxml2 would otherwise build the entity declarations. The
    # second form catches a UTF-16 document (one NUL byte per ASCII character).
    if (
        b"<!DOCTYPE" in data[:65536].upper()
        or b"<!DOCTYPE" in data[:131072].replace(b"\0", b"").upper()
    ):
        raise UnsafeXml(_DTD.format(what=what))
    try:
        root = etree.fromstring(data, parser=_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise UnsafeXml(f"{what} n'est pas un XML lisible.") from exc
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise UnsafeXml(_DTD.format(what=what))
    if any(isinstance(node, etree._Entity) for node in root.iter()):
        raise UnsafeXml(f"{what} contient des entités : refusé.")
    return root
