"""Closing and exporting a BAL as jobs of the store worker.

The web process only records the request (a ``MailboxJob`` row) and enqueues it on the
Celery queue ``store``, consumed by the worker that mounts the mail (docker-compose's
``store-worker``): reading a whole BAL and deleting its Maildir are not done in a web request,
nor by a process that cannot see the mail. The console polls the row for progress.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Structure, User
from mailboxes.console.services import closing
from mailboxes.console.services import export as export_svc
from mailboxes.errors import RecoveryKeyMissing
from mailboxes.models import Mailbox, MailboxJob
from mssante_portal.errors import PortalError

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger(__name__)

JOB_TASK = "mailboxes.tasks.run_mailbox_job"
STORE_QUEUE = "store"
# Progress is written every this many messages (and at the first and the last).
PROGRESS_EVERY = 20

BUSY = "Une fermeture ou un export de cette BAL est déjà en cours."
KEPT = {
    "delete_failed": "l'archive est enregistrée mais les messages n'ont pas pu être supprimés "
    "du serveur de messagerie. Ils y sont toujours : prévenez l'opérateur.",
    "mail_still_arriving": "l'archive est enregistrée mais des messages arrivaient encore : "
    "ils sont conservés sur le serveur de messagerie. Prévenez l'opérateur.",
}
UNEXPECTED = "Une erreur inattendue a interrompu la tâche ; rien n'a été supprimé. Réessayez."


def _enqueue(job: MailboxJob) -> None:
    current_app.send_task(JOB_TASK, args=[str(job.public_id)], queue=STORE_QUEUE)


def job_request(
    *, mailbox: Mailbox, kind: str, actor: User | None, request: HttpRequest | None = None
) -> MailboxJob:
    """Record a close or an export of ``mailbox`` and enqueue it on the ``store`` queue after
    commit. Raises ValidationError (``closed``: the BAL is closed; ``busy``: a job of this BAL
    is already waiting or running) and RecoveryKeyMissing (the structure has no recovery key;
    traced as the service would), with nothing recorded."""
    if mailbox.status == Mailbox.Status.CLOSED:
        raise ValidationError("Cette BAL est fermée.", code="closed")
    if not Structure.objects.filter(pk=mailbox.structure_id).exclude(recovery_key="").exists():
        # The service traces the refusal; running it here says so at once, with no job.
        if kind == MailboxJob.Kind.CLOSE:
            closing.mailbox_close(mailbox=mailbox, actor=actor, request=request)
        else:
            export_svc.mailbox_export(mailbox=mailbox, actor=actor, request=request)
        raise RecoveryKeyMissing()  # not reached: both raise it first
    try:
        with transaction.atomic():
            job = MailboxJob.objects.create(mailbox=mailbox, kind=kind, requested_by=actor)
            transaction.on_commit(partial(_enqueue, job))
    except IntegrityError:  # mailboxjob_one_active_per_mailbox
        raise ValidationError(BUSY, code="busy") from None
    return job


def _progress(job: MailboxJob) -> export_svc.Progress:
    def report(done: int, total: int) -> None:
        if done in (0, total) or done % PROGRESS_EVERY == 0:
            MailboxJob.objects.filter(pk=job.pk).update(
                done=done, total=total, heartbeat_at=timezone.now()
            )

    return report


def _finish(job: MailboxJob, state: str, *, error: str = "", export_id: int | None = None) -> None:
    MailboxJob.objects.filter(pk=job.pk).update(
        state=state, error=error, export_id=export_id, finished_at=timezone.now()
    )


def job_run(*, public_id: str) -> str:
    """Run a waiting job: claim it (``en_attente`` -> ``en_cours`` in one conditional
    update, so that a task delivered twice runs it once), export or close the BAL with
    progress written to the row, then end it in ``termine`` or ``echec`` with the reason in
    French. A close whose Maildir could not be removed is an ``echec`` (the journal's
    ``mailbox.mail_deleted`` says failure too). Returns the final state, or "" when the job
    was not waiting. Runs outside any transaction, on the process that mounts the mail."""
    claimed = MailboxJob.objects.filter(public_id=public_id, state=MailboxJob.State.QUEUED).update(
        state=MailboxJob.State.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    if not claimed:
        return ""
    job = MailboxJob.objects.select_related("mailbox", "requested_by").get(public_id=public_id)
    actor, progress = job.requested_by, _progress(job)
    try:
        if job.kind == MailboxJob.Kind.CLOSE:
            closed = closing.mailbox_close_now(mailbox=job.mailbox, actor=actor, progress=progress)
            if closed.kept_code:
                error = "La BAL est fermée et " + KEPT.get(closed.kept_code, KEPT["delete_failed"])
                _finish(job, MailboxJob.State.FAILED, error=error, export_id=closed.export.pk)
                return MailboxJob.State.FAILED
            export = closed.export
        else:
            export = export_svc.mailbox_export(mailbox=job.mailbox, actor=actor, progress=progress)
    except PortalError as exc:
        _finish(job, MailboxJob.State.FAILED, error=exc.user_message)
        return MailboxJob.State.FAILED
    except ValidationError as exc:
        _finish(job, MailboxJob.State.FAILED, error=" ".join(exc.messages))
        return MailboxJob.State.FAILED
    except Exception:
        logger.exception("mailbox job %s failed", public_id)
        _finish(job, MailboxJob.State.FAILED, error=UNEXPECTED)
        return MailboxJob.State.FAILED
    _finish(job, MailboxJob.State.DONE, export_id=export.pk)
    return MailboxJob.State.DONE


INTERRUPTED = (
    "La tâche a été interrompue (arrêt du processus qui l'exécutait). Si la BAL est fermée, "
    "ses messages peuvent être encore sur le serveur de messagerie : prévenez l'opérateur ; "
    "sinon, relancez l'opération."
)


def jobs_sweep(*, now: datetime | None = None) -> int:
    """What lost tasks left behind: a waiting job older than ``JOB_REQUEUE_SECONDS`` is
    enqueued again (claiming makes a duplicate harmless); a running job whose progress has
    not moved for ``JOB_STALE_SECONDS`` (its worker died) ends in ``echec``; the partial
    (encrypted) files of exports killed mid-way are removed when this process sees
    EXPORT_DIR. Returns how many jobs were touched."""
    now = now or timezone.now()
    root = Path(settings.EXPORT_DIR)
    if root.is_dir():
        for directory in (d for d in root.iterdir() if d.is_dir() and not d.is_symlink()):
            export_svc.export_partials_purge(directory)
    waiting = MailboxJob.objects.filter(
        state=MailboxJob.State.QUEUED,
        created_at__lt=now - timedelta(seconds=settings.JOB_REQUEUE_SECONDS),
    )
    touched = 0
    for job in waiting:
        _enqueue(job)
        touched += 1
    touched += MailboxJob.objects.filter(
        state=MailboxJob.State.RUNNING,
        heartbeat_at__lt=now - timedelta(seconds=settings.JOB_STALE_SECONDS),
    ).update(state=MailboxJob.State.FAILED, error=INTERRUPTED, finished_at=now)
    return touched
