"""The address proposed for a new personal BAL (issue 7): `prenom.nom@domaine`, lower case,
accents removed, hyphens kept (`jean-marc.ndiaye`), apostrophes dropped (`N'DIAYE` ->
`ndiaye`), spaces of particles as hyphens (`de-la-fontaine`), a numeric suffix when the
address is taken (`helene.lefevre2`). The director may edit it within the rules of a local
part (RFC 5321: 64 characters at most)."""

from __future__ import annotations

import re

from annuaire.extraction import ascii_fold
from mailboxes.models import Mailbox

MAX_LOCAL = 64


def _part(value: str) -> str:
    value = ascii_fold(value).lower()
    value = re.sub(r"['`\u2019\u00b4]", "", value)
    value = re.sub(r"[\s_.]+", "-", value.strip())
    value = re.sub(r"[^a-z0-9-]", "", value)
    return re.sub(r"-{2,}", "-", value).strip("-")


def local_part_for(first_name: str, last_name: str) -> str:
    """`prenom.nom` by the naming rule (no uniqueness check)."""
    return ".".join(p for p in (_part(first_name), _part(last_name)) if p)[: MAX_LOCAL - 3]


def address_propose(*, first_name: str, last_name: str, domain: str) -> str:
    """The first free address for this person on ``domain`` (closed BALs keep their address:
    it is never given to someone else)."""
    base = local_part_for(first_name, last_name)
    if not base:
        raise ValueError("Nom et prénom vides : impossible de proposer une adresse.")
    taken = set(
        Mailbox.objects.filter(
            domain__domain=domain.lower(), local_part__startswith=base
        ).values_list("local_part", flat=True)
    )
    local, n = base, 1
    while local in taken:
        n += 1
        local = f"{base}{n}"
    return f"{local}@{domain.lower()}"
