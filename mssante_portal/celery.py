"""The Celery app and its periodic schedule (ARCHITECTURE.md: worker and beat processes).

Tasks are thin (ids in, one service call, safe to run twice); no eager mode, in tests either.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mssante_portal.settings")

app = Celery("mssante_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,  # a task lost with its worker is redelivered
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    broker_connection_retry_on_startup=True,
    timezone="Europe/Paris",
)
# Celery's Django fixup closes the database connection before and after every task unless
# this is set (one new PostgreSQL backend per task otherwise): reuse it for 500 tasks, and
# Django's CONN_MAX_AGE / health checks still apply.
app.conf["CELERY_DB_REUSE_MAX"] = 500
app.autodiscover_tasks()

# The periodic schedule lives here, in code. Later capabilities add their sweeps and syncs.
app.conf.beat_schedule = {
    "annuaire-sync-whitelist": {"task": "annuaire.tasks.sync_whitelist", "schedule": 6 * 3600.0},
    "annuaire-check-whitelist-age": {
        "task": "annuaire.tasks.check_whitelist_age",
        "schedule": 3600.0,
    },
    "annuaire-import-directory": {
        "task": "annuaire.tasks.import_directory",
        "schedule": crontab(hour=5, minute=17),  # the file is published ~02-03 h UTC
    },
    "mailboxes-relay-sweep": {"task": "mailboxes.tasks.relay_sweep", "schedule": 60.0},
    "mailboxes-compute-indicators": {
        "task": "mailboxes.tasks.compute_indicators",
        "schedule": 3600.0,
    },
    "mailboxes-sweep-jobs": {"task": "mailboxes.tasks.sweep_mailbox_jobs", "schedule": 120.0},
    "mailboxes-compute-usage": {"task": "mailboxes.tasks.compute_usage", "schedule": 3600.0},
    # IGC-Santé CRLs are published daily: fetched every 6 h so that one failed download
    # still leaves the day's CRL in force; the age check alerts before it ends.
    "mailboxes-sync-crl": {"task": "mailboxes.tasks.sync_crl", "schedule": 6 * 3600.0},
    "mailboxes-check-crl-expiry": {"task": "mailboxes.tasks.check_crl_expiry", "schedule": 3600.0},
    "mailboxes-purge-gateway-attempts": {
        "task": "mailboxes.tasks.purge_gateway_attempts",
        "schedule": crontab(hour=3, minute=53),
    },
    "accounts-purge-audit": {
        "task": "accounts.tasks.purge_audit",
        "schedule": crontab(hour=3, minute=41),
    },
    "accounts-purge-expired-sessions": {
        "task": "accounts.tasks.purge_expired_sessions",
        "schedule": 3600.0,
    },
}
