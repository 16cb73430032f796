from celery import shared_task

from accounts.services import sessions_purge_expired


@shared_task(name="accounts.tasks.purge_expired_sessions")
def purge_expired_sessions() -> int:
    return sessions_purge_expired()
