from celery import shared_task
from django.conf import settings

from annuaire.extraction import ExtractionError
from annuaire.services import directory_import_url, whitelist_staleness_check, whitelist_sync


@shared_task(name="annuaire.tasks.sync_whitelist")
def sync_whitelist() -> str:
    return whitelist_sync().result


@shared_task(name="annuaire.tasks.check_whitelist_age")
def check_whitelist_age() -> bool:
    return whitelist_staleness_check()


@shared_task(name="annuaire.tasks.import_directory")
def import_directory() -> str:
    """Daily: the national extraction from ANNUAIRE_EXTRACTION_URL (off when empty). A refused
    file is recorded as a failed run and leaves the directory in force."""
    if not settings.ANNUAIRE_EXTRACTION_URL:
        return "disabled"
    try:
        return directory_import_url(url=settings.ANNUAIRE_EXTRACTION_URL).result
    except ExtractionError:
        return "failure"
