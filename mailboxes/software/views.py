"""The endpoint Dovecot's Lua passdb calls for every XOAUTH2/OAUTHBEARER login on the
API LPS listeners (mailboxes/store/dovecot_lps.py). Reachable from loopback only, with the
shared secret; the token is read from the body and kept nowhere (SC.MSS/CONF.28)."""

from __future__ import annotations

import ipaddress
import secrets

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import professional_required
from accounts.models import StructureDomain, User
from mailboxes.access import access_mailbox
from mailboxes.software.autoconfig import autoconfig_xml, endpoints
from mailboxes.software.psc import PscUnavailable, issuer
from mailboxes.software.sessions import (
    LoginRefused,
    certificate_login,
    imap_group,
    software_login,
)

# Where mssante_portal/urls.py and urls.py mount ``dovecot_auth`` (the middleware compares
# paths without resolving the URL; a test checks they agree).
DOVECOT_AUTH_PATH = "/logiciels/dovecot/auth"


def from_dovecot(request: HttpRequest) -> bool:
    """The peer is in LPS_AUTH_NETWORKS (loopback by default) and shows the shared secret."""
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    given = request.headers.get("X-LPS-Secret", "")
    return (
        any(peer in network for network in settings.LPS_AUTH_NETWORKS)
        and bool(settings.LPS_AUTH_SECRET)
        and secrets.compare_digest(given.encode(), settings.LPS_AUTH_SECRET.encode())
    )


@csrf_exempt
@require_POST
def dovecot_auth(request: HttpRequest) -> HttpResponse:
    """Body: ``login NUL token NUL`` (deploy/dovecot/lps-auth.lua.tmpl); for SASL EXTERNAL
    (header ``X-Dovecot-Mechanism``), ``certificate CN NUL requested BAL NUL``. 200 with the
    session's extra fields (tab-separated, for Dovecot), 403 refused, 503 PSC unreachable
    (Dovecot then answers a temporary failure), 404 to anyone but Dovecot."""
    if not from_dovecot(request):
        return HttpResponse(status=404)
    parts = request.body.split(b"\0")
    if len(parts) < 2:
        return HttpResponse(status=403)
    try:
        address, token = parts[0].decode(), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return HttpResponse(status=403)
    remote = request.headers.get("X-Dovecot-Remote", "") or None
    service = request.headers.get("X-Dovecot-Service", "imap")[:16]
    external = request.headers.get("X-Dovecot-Mechanism", "").upper() == "EXTERNAL"
    try:
        if external:
            # ``login``: the certificate's CN (Dovecot verified the certificate); ``token``:
            # the BAL the client named, "" for the certificate's own.
            session = certificate_login(
                common_name=address, login=token, service=service, remote=remote
            )
        else:
            session = software_login(address=address, token=token, service=service, remote=remote)
    except LoginRefused:
        return HttpResponse(status=403)
    except PscUnavailable:
        return HttpResponse(status=503)
    # Names the person (or the certificate) in the session's log lines (imap_traces).
    actor = (
        session.user.national_id
        if session.user is not None
        else f"cert:{session.certificate.fingerprint if session.certificate else ''}"
    )
    fields = [f"user={session.grant.mailbox.address}", f"userdb_lps_actor={actor}"]
    group = imap_group(session.grant)
    if group:
        fields.append(f"userdb_acl_groups={group}")
    return HttpResponse("\t".join(fields), content_type="text/plain")


@require_GET
def autoconfig(request: HttpRequest) -> HttpResponse:
    """Thunderbird's autoconfig for a domain we host: from ``emailaddress`` (the well-known
    form) or from the ``autoconfig.<domain>`` host. 404 for any other domain."""
    address = request.GET.get("emailaddress", "")
    domain = address.rpartition("@")[2].lower() if "@" in address else ""
    if not domain:
        host = request.get_host().split(":")[0].lower()
        domain = host.removeprefix("autoconfig.") if host.startswith("autoconfig.") else ""
    found = (
        StructureDomain.objects.filter(domain=domain).select_related("structure").first()
        if domain
        else None
    )
    if found is None:
        raise Http404
    return HttpResponse(
        autoconfig_xml(found.domain, found.structure.name), content_type="application/xml"
    )


@professional_required
@require_GET
def connect(request: HttpRequest, public_id: str) -> HttpResponse:
    """« Connecter un logiciel »: the settings a professional gives their mail client or care
    software for this BAL."""
    assert isinstance(request.user, User)
    grant = access_mailbox(request.user, public_id)
    return render(
        request,
        "mailboxes/connect.html",
        {
            "mailbox": grant.mailbox,
            "grant": grant,
            "endpoints": [e for e in endpoints() if e.port],
            "issuer": issuer(),
        },
    )
