"""The structure's type (TRE_R02 sector): the healthcareFacilityTypeCode and, through it, the
practiceSettingCode of the health documents its BALs send (mailboxes.documents.codes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.audit import Action, audit_record
from accounts.models import Structure, User
from mailboxes.documents.codes import PRACTICE_SETTING_OF_SECTOR

if TYPE_CHECKING:
    from django.http import HttpRequest


@transaction.atomic
def structure_sector_set(
    *, structure: Structure, code: str, actor: User, request: HttpRequest | None = None
) -> None:
    """Set the sector of ``structure`` to ``code`` (one of codes.sector_choices). Raises
    ValidationError for any other code. Traced (``structure.sector_set``)."""
    if code not in PRACTICE_SETTING_OF_SECTOR:
        raise ValidationError("Choisissez le type de la structure dans la liste.")
    before = structure.facility_type_code
    structure.facility_type_code = code
    structure.save(update_fields=["facility_type_code"])
    audit_record(
        action=Action.STRUCTURE_SECTOR_SET,
        actor=actor,
        target=structure,
        structure=structure,
        request=request,
        details={"before": before, "after": code},
    )
