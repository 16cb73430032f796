from celery import shared_task

from accounts.services import audit_purge, sessions_purge_expired


@shared_task(name="accounts.tasks.purge_expired_sessions")
def purge_expired_sessions() -> int:
    return sessions_purge_expired()


@shared_task(name="accounts.tasks.purge_audit")
def purge_audit() -> int:
    return audit_purge()
