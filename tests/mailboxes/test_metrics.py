"""Prometheus metrics at /sante/metriques: never public, and computed at scrape time from
what the gateway, the relay and the syncs really did (real gateway over mutual TLS, real
relay attempt, real CRL sync, the test PKI's certificates)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from devtools.pki import Issued, issue_crl
from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.transport.crl_sync import crl_sync
from mailboxes.transport.gateway import stats as gateway_stats
from mailboxes.transport.relay import Recipient, message_relay, message_spool
from tests.factories import make_message
from tests.mailboxes.conftest import _free_port, mx_client

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/sante/metriques"
TOKEN = "jeton-de-supervision-" + "x" * 20


def _scrape(**headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client().get(URL, headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


@pytest.fixture
def token(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_NETWORKS = []


def test_metrics_are_never_public(settings: Any) -> None:
    settings.METRICS_TOKEN, settings.METRICS_NETWORKS = "", []
    assert Client().get(URL).status_code == 404  # nothing configured: nobody
    assert Client().get(URL, headers={"Authorization": "Bearer "}).status_code == 404

    settings.METRICS_TOKEN = TOKEN
    assert Client().get(URL).status_code == 404
    assert Client().get(URL, headers={"Authorization": "Bearer autre"}).status_code == 404
    assert Client().get(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    settings.METRICS_TOKEN = ""
    settings.METRICS_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    assert Client().get(URL).status_code == 404  # the test client is 127.0.0.1
    assert Client(REMOTE_ADDR="10.1.2.3").get(URL).status_code == 200


@pytest.fixture
def small_mx(settings: Any) -> None:
    """Messages over 4 KiB are refused at the end of DATA (552) by the MX started next."""
    settings.GATEWAY_MAX_SIZE = 4096


def test_metrics_count_what_the_gateway_and_the_relay_did(
    token: None, small_mx: None, mx: int, pki: dict[str, Issued], box: Mailbox, settings: Any
) -> None:
    before = _scrape()
    assert before[("mssante_relay_queue_depth", ())] == 0
    assert before[("mssante_relay_oldest_due_seconds", ())] == 0

    with mx_client(mx, pki) as smtp:  # one accepted, one refused at the end of DATA
        smtp.sendmail("labo@operateur-test.mssante.fr", [box.address], make_message())
        smtp.mail("labo@operateur-test.mssante.fr")
        smtp.rcpt(box.address)
        code, _reply = smtp.data(make_message(body="Ligne de compte rendu.\r\n" * 300))
    assert code == 552
    settings.RELAY_ROUTES = [f"operateur-test.mssante.fr=127.0.0.1:{_free_port()}"]  # closed
    settings.RELAY_CERT, settings.RELAY_KEY = str(pki["gateway"].cert), str(pki["gateway"].key)
    settings.RELAY_CA_BUNDLE = str(pki["ca"].cert)
    message = message_spool(
        origin=OutboundMessage.Origin.WEBMAIL,
        envelope_from=box.address,
        recipients=[Recipient("dr.durand@operateur-test.mssante.fr")],
        content=make_message(sender=box.address, to="dr.durand@operateur-test.mssante.fr"),
        message_id="<metriques-1@ehpad-les-tilleuls.mssante.fr>",
        mailbox=box,
    )
    message_relay(public_id=str(message.public_id))  # refused connection: a retry later

    after = _scrape()

    assert after[("mssante_gateway_messages_total", (("code", "250"), ("result", "success")))] == 1
    assert after[("mssante_gateway_messages_total", (("code", "552"), ("result", "failure")))] == 1
    assert after[("mssante_relay_outcomes_total", (("outcome", "queued"),))] == 1
    assert after[("mssante_relay_outcomes_total", (("outcome", "relayed"),))] == 0
    assert after[("mssante_outbound_deliveries", (("status", "queued"),))] == 1
    assert after[("mssante_relay_queue_depth", ())] == 1
    assert after[("mssante_relay_oldest_due_seconds", ())] == 0  # its retry is not due yet


def test_metrics_give_sync_ages_and_certificate_days(
    token: None, pki: dict[str, Issued], settings: Any, tmp_path: Path
) -> None:
    settings.GATEWAY_CERT = settings.RELAY_CERT = str(pki["gateway"].cert)
    settings.TLS_CRL_FILE = str(tmp_path / "tls" / "crl.pem")
    settings.TLS_CRL_URLS = []
    settings.GATEWAY_CA_BUNDLE = settings.RELAY_CA_BUNDLE = str(pki["ca"].cert)
    assert ("mssante_sync_age_seconds", (("source", "crl"),)) not in _scrape()  # never synced
    crl = tmp_path / "vide.crl"
    now = dt.datetime.now(dt.UTC)
    issue_crl(Path(pki["ca"].cert).parent, revoked=[], last_update=now - dt.timedelta(days=2),
              next_update=now + dt.timedelta(days=3), out=crl)  # fmt: skip
    assert crl_sync(sources=[str(crl)]).result == "success"

    found = _scrape()

    assert 0 <= found[("mssante_sync_age_seconds", (("source", "crl"),))] < 60
    assert ("mssante_sync_age_seconds", (("source", "whitelist"),)) not in found
    assert 3 * 86400 - 60 < found[("mssante_crl_next_update_seconds", ())] <= 3 * 86400
    end = x509.load_pem_x509_certificate(Path(pki["gateway"].cert).read_bytes())
    expected = (end.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    for name in ("gateway", "relay"):
        days = found[("mssante_certificate_days_left", (("certificate", name),))]
        assert abs(days - expected) < 0.01


def test_metrics_count_the_gateways_sessions_and_every_reply(
    token: None, mx: int, pki: dict[str, Issued], box: Mailbox
) -> None:
    import smtplib
    import ssl

    gateway_stats.flush()  # what earlier tests of this process left pending
    before = _scrape()

    with mx_client(mx, pki) as smtp:  # admitted: 220, EHLO, STARTTLS, EHLO, MAIL, RCPT refused
        smtp.mail("labo@operateur-test.mssante.fr")
        code, _reply = smtp.rcpt("inconnu@ehpad-les-tilleuls.mssante.fr")
    assert code == 550
    bare = smtplib.SMTP("127.0.0.1", mx, timeout=10)  # no client certificate: TLS refused
    bare.ehlo("smtp.inconnu.fr")
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    context.check_hostname = False
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        bare.starttls(context=context)
        bare.noop()  # TLS 1.3: the server's refusal of the certificate comes after the handshake
    bare.close()
    gateway_stats.flush()  # as the gateway process does every few seconds and when it drains

    after = _scrape()

    def delta(name: str, label: str, value: str) -> float:
        key = (name, ((label, value),))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("mssante_gateway_sessions_total", "outcome", "admises") == 2
    assert delta("mssante_gateway_sessions_total", "outcome", "tls_echec") == 1
    assert delta("mssante_gateway_replies_total", "code", "550") == 1
    assert delta("mssante_gateway_replies_total", "code", "220") >= 3  # greetings, STARTTLS
