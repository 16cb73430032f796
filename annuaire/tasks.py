from celery import shared_task

from annuaire.services import whitelist_staleness_check, whitelist_sync


@shared_task(name="annuaire.tasks.sync_whitelist")
def sync_whitelist() -> str:
    return whitelist_sync().result


@shared_task(name="annuaire.tasks.check_whitelist_age")
def check_whitelist_age() -> bool:
    return whitelist_staleness_check()
