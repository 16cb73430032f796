"""Prometheus metrics at /sante/metriques, computed at scrape time from the database, the
traces and the files in force: one answer whichever process (web worker, gateway, relay
worker) did the work, with no per-process state to aggregate. Counters come from the traces,
so they drop when the daily purge removes old traces (AUDIT_RETENTION_DAYS); Prometheus's
``rate()`` and ``increase()`` take that as a counter reset.

Never public: answered only to a client in METRICS_NETWORKS or presenting METRICS_TOKEN as a
bearer token; anyone else, and everyone when neither is set, gets a 404.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from cryptography import x509
from django.conf import settings
from django.db.models import Count, Min
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from accounts.audit import Action, client_ip
from accounts.models import AuditEvent
from annuaire.selectors import directory_last_import
from mailboxes.models import MailboxJob, OutboundDelivery
from mailboxes.transport.crl import CrlError, read_in_force
from mailboxes.transport.gateway import stats as gateway_stats

logger = logging.getLogger(__name__)

RELAY_PREFIX = "relay."
SECONDS_PER_DAY = 86400


def _last_success(action: str) -> datetime | None:
    return (
        AuditEvent.objects.filter(action=action, result=AuditEvent.Result.SUCCESS)
        .order_by("-occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )


def _certificate_end(path: str) -> datetime | None:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


class PortalCollector(Collector):
    """Every metric of the portal, read when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from self._gateway()
        yield from self._relay(now)
        yield from self._syncs(now)
        yield from self._certificates(now)
        yield from self._jobs()

    def _gateway(self) -> Iterable[Metric]:
        received = CounterMetricFamily(
            "mssante_gateway_messages",
            "Transactions of the gateway (MX) that reached DATA, by result and SMTP reply code.",
            labels=["result", "code"],
        )
        rows = (
            AuditEvent.objects.filter(action=Action.GATEWAY_RECEIVED)
            .values_list("result", "error_code")
            .annotate(n=Count("id"))
        )
        for result, code, n in rows:
            received.add_metric([result, code or "250"], n)
        yield received
        # Counted by the gateway processes themselves (transport.gateway.stats): sessions and
        # every reply, the refusals at connection, MAIL and RCPT included.
        totals = gateway_stats.totals()
        sessions = CounterMetricFamily(
            "mssante_gateway_sessions",
            "SMTP sessions of the gateway: admitted, refused at connection (limits, draining), "
            "TLS handshake failed (certificate, CRL, protocol).",
            labels=["outcome"],
        )
        replies = CounterMetricFamily(
            "mssante_gateway_replies",
            "Every SMTP reply of the gateway, by code.",
            labels=["code"],
        )
        for key, n in totals.items():
            kind, _sep, label = key.removeprefix(gateway_stats.PREFIX).partition(":")
            (sessions if kind == "sessions" else replies).add_metric([label], n)
        yield sessions
        yield replies

    def _relay(self, now: datetime) -> Iterable[Metric]:
        attempts = CounterMetricFamily(
            "mssante_relay_outcomes",
            "Outcomes of relay attempts to other operators (queued: a retry is scheduled).",
            labels=["outcome"],
        )
        outcomes = dict.fromkeys(
            (a.value.removeprefix(RELAY_PREFIX) for a in Action if a.startswith(RELAY_PREFIX)),
            0,
        )
        rows = (
            AuditEvent.objects.filter(action__startswith=RELAY_PREFIX)
            .values_list("action")
            .annotate(n=Count("id"))
        )
        for action, n in rows:
            outcomes[action.removeprefix(RELAY_PREFIX)] = n
        for outcome, n in sorted(outcomes.items()):
            attempts.add_metric([outcome], n)
        yield attempts

        by_status = dict.fromkeys(OutboundDelivery.Status.values, 0)
        by_status.update(
            OutboundDelivery.objects.values_list("status").annotate(n=Count("id")).order_by()
        )
        deliveries = GaugeMetricFamily(
            "mssante_outbound_deliveries",
            "Outbound deliveries (one per recipient) in the spool, by state.",
            labels=["status"],
        )
        for status, n in by_status.items():
            deliveries.add_metric([status], n)
        yield deliveries
        yield GaugeMetricFamily(
            "mssante_relay_queue_depth",
            "Deliveries not yet relayed: waiting for an attempt or being sent.",
            value=by_status[OutboundDelivery.Status.QUEUED]
            + by_status[OutboundDelivery.Status.SENDING],
        )
        oldest = OutboundDelivery.objects.filter(
            status=OutboundDelivery.Status.QUEUED, next_attempt_at__lte=now
        ).aggregate(oldest=Min("next_attempt_at"))["oldest"]
        yield GaugeMetricFamily(
            "mssante_relay_oldest_due_seconds",
            "How long the oldest delivery due for an attempt has waited (0: none is due).",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )

    def _syncs(self, now: datetime) -> Iterable[Metric]:
        ages = GaugeMetricFamily(
            "mssante_sync_age_seconds",
            "Time since the last successful sync of the whitelist, the annuaire and the CRLs "
            "(absent: never synced).",
            labels=["source"],
        )
        directory = directory_last_import()
        last = {
            "whitelist": _last_success(Action.WHITELIST_SYNC),
            "annuaire": directory.finished_at or directory.started_at if directory else None,
            "crl": _last_success(Action.CRL_SYNC),
        }
        for source, when in last.items():
            if when is not None:
                ages.add_metric([source], (now - when).total_seconds())
        yield ages
        try:
            crls = read_in_force(settings.TLS_CRL_FILE)
        except CrlError:
            logger.warning("metrics: the CRL file in force cannot be read")
            crls = []
        if crls:
            yield GaugeMetricFamily(
                "mssante_crl_next_update_seconds",
                "Time until the first CRL in force ends (negative: ended, peers are refused).",
                value=min((c.next_update - now).total_seconds() for c in crls),
            )

    def _certificates(self, now: datetime) -> Iterable[Metric]:
        days = GaugeMetricFamily(
            "mssante_certificate_days_left",
            "Days until our certificates expire (absent: unreadable).",
            labels=["certificate"],
        )
        for name, path in (("gateway", settings.GATEWAY_CERT), ("relay", settings.RELAY_CERT)):
            end = _certificate_end(path)
            if end is not None:
                days.add_metric([name], (end - now).total_seconds() / SECONDS_PER_DAY)
        yield days

    def _jobs(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "mssante_mailbox_jobs",
            "BAL close and export jobs, by kind and state.",
            labels=["kind", "state"],
        )
        counts = dict(
            ((kind, state), n)
            for kind, state, n in MailboxJob.objects.values_list("kind", "state")
            .annotate(n=Count("id"))
            .order_by()
        )
        for kind in MailboxJob.Kind.values:
            for state in MailboxJob.State.values:
                jobs.add_metric([kind, state], counts.get((kind, state), 0))
        yield jobs


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    address = client_ip(request)
    if not settings.METRICS_NETWORKS or address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in settings.METRICS_NETWORKS)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition, to the monitoring system only (404 to anyone else)."""
    if not _allowed(request):
        raise Http404
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
