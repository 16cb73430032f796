"""Celery tasks of the mailboxes app: thin, ids in, one service call, safe to run twice."""

from celery import shared_task
from django.conf import settings

from mailboxes.console.services.indicators import indicators_compute
from mailboxes.console.services.jobs import job_run, jobs_sweep
from mailboxes.console.services.lifecycle import dovecot_backend_users_sync
from mailboxes.console.services.usage import usage_compute
from mailboxes.transport.absence_replies import absence_reply
from mailboxes.transport.crl_sync import crl_expiry_check, crl_sync
from mailboxes.transport.gateway.dedup import attempts_purge
from mailboxes.transport.notices import notice_send
from mailboxes.transport.relay import BATCH_ROWS, message_relay, relay_sweep


@shared_task(name="mailboxes.tasks.relay_message")
def relay_message(public_id: str) -> int:
    return message_relay(public_id=public_id, also_due=BATCH_ROWS)


@shared_task(name="mailboxes.tasks.relay_sweep")
def sweep_relay() -> int:
    return relay_sweep()


@shared_task(name="mailboxes.tasks.compute_indicators")
def compute_indicators() -> int:
    return indicators_compute()


@shared_task(
    name="mailboxes.tasks.send_notice",
    autoretry_for=(OSError,),
    retry_backoff=60,
    max_retries=5,
)
def send_notice(mailbox_id: int) -> bool:
    return notice_send(mailbox_id=mailbox_id)


@shared_task(name="mailboxes.tasks.send_absence_reply")
def send_absence_reply(bal: str, sender: str, facts: dict[str, str]) -> bool:
    """The absence reply of one BAL to one sender: safe to run twice (AbsenceReply row)."""
    return absence_reply(bal=bal, sender=sender, facts=facts)


@shared_task(name="mailboxes.tasks.compute_usage")
def compute_usage() -> int:
    return usage_compute()


@shared_task(name="mailboxes.tasks.sync_crl")
def sync_crl() -> str:
    """The IGC-Santé CRLs from TLS_CRL_URLS (off when empty). A refused CRL is logged and
    traced, and the one in force stays."""
    if not settings.TLS_CRL_URLS:
        return "disabled"
    return crl_sync().result


@shared_task(name="mailboxes.tasks.check_crl_expiry")
def check_crl_expiry() -> bool:
    return crl_expiry_check()


@shared_task(name="mailboxes.tasks.purge_gateway_attempts")
def purge_gateway_attempts() -> int:
    return attempts_purge()


@shared_task(name="mailboxes.tasks.dovecot_backend_sync")
def dovecot_backend_sync(name: str) -> int:
    """Sent to the queue ``dovecot-<name>``, consumed on that backend's host only."""
    return dovecot_backend_users_sync(name)


@shared_task(name="mailboxes.tasks.run_mailbox_job")
def run_mailbox_job(public_id: str) -> str:
    """A close or export of a BAL; routed to the queue ``store`` (CELERY_TASK_ROUTES)."""
    return job_run(public_id=public_id)


@shared_task(name="mailboxes.tasks.sweep_mailbox_jobs")
def sweep_mailbox_jobs() -> int:
    return jobs_sweep()
