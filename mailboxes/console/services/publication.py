"""Publication of our BALs to the national directory (issue 6): the FHIR PATCH payloads
(annuaire.fhir) for the BALs we host, compared with the last imported extraction, and
their sending when ANNUAIRE_PUBLICATION_URL is set (off by default: the ANS write endpoint is
"en cours de développement", reference §4)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import requests
from django.conf import settings

from accounts.audit import Action, audit_record
from accounts.models import Structure, User
from annuaire.fhir import BalRecord, Publication, publication_build
from annuaire.selectors import directory_entries
from mailboxes.models import Mailbox
from mssante_portal.errors import PortalError

logger = logging.getLogger(__name__)


class PublicationDisabled(PortalError):
    user_message = (
        "La publication vers l'Annuaire Santé est désactivée (ANNUAIRE_PUBLICATION_URL vide) : "
        "les requêtes sont seulement affichées."
    )
    code = "annuaire.publication_disabled"
    http_status = 409


def _record(box: Mailbox) -> BalRecord:
    responsible = box.responsible
    return BalRecord(
        address=box.address,
        kind=box.kind,
        active=box.status != Mailbox.Status.CLOSED,
        national_id=(box.owner.national_id or "") if box.owner else "",
        structure_kind=box.structure.identifier_kind,
        structure_id=box.structure.identifier,
        description=box.description,
        service=box.service,
        responsible=f"{responsible.first_name} {responsible.last_name}".strip()
        if responsible
        else "",
        liste_rouge=box.liste_rouge,
    )


def publication_plan(*, structures: Iterable[Structure] | None = None) -> list[Publication]:
    """One PATCH per BAL we host (of these structures), with what the last extraction says
    differently."""
    query = Mailbox.objects.select_related("structure", "owner", "responsible").order_by(
        "structure__name", "kind", "address"
    )
    if structures is not None:
        query = query.filter(structure__in=list(structures))
    boxes = list(query)
    listed = directory_entries([b.address for b in boxes])
    return [publication_build(_record(b), listed.get(b.address)) for b in boxes]


@dataclass(frozen=True)
class Sent:
    publication: Publication
    status: int  # HTTP status, 0 when unreachable
    detail: str


def publication_send(*, publications: list[Publication], actor: User | None = None) -> list[Sent]:
    """PATCH each payload to the configured FHIR endpoint; one trace per BAL (never content),
    on the BAL itself so that its structure's journal shows it."""
    base = settings.ANNUAIRE_PUBLICATION_URL.rstrip("/")
    if not base:
        raise PublicationDisabled
    headers = {
        "Content-Type": "application/fhir+json",
        "Accept": "application/fhir+json",
        "ESANTE-API-KEY": settings.ANNUAIRE_PUBLICATION_API_KEY,
    }
    boxes = {
        box.address: box
        for box in Mailbox.objects.filter(address__in=[p.record.address for p in publications])
    }
    results = []
    for publication in publications:
        try:
            response = requests.patch(
                f"{base}/{publication.target}",
                data=json.dumps(publication.body),
                headers=headers,
                timeout=30,
            )
            sent = Sent(publication, response.status_code, response.reason or "")
        except requests.RequestException as exc:
            sent = Sent(publication, 0, str(exc)[:200])
        ok = 200 <= sent.status < 300
        box = boxes.get(publication.record.address)
        audit_record(
            action=Action.BAL_PUBLISHED,
            actor=actor,
            actor_label="" if actor else "publish_bals",
            target=box,
            structure_id=box.structure_id if box else None,
            success=ok,
            error_code="" if ok else f"http_{sent.status}",
            details={
                "address": publication.record.address,
                "operation": publication.operation,
                "status": sent.status,
            },
        )
        results.append(sent)
    return results
