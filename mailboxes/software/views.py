"""The endpoint Dovecot's checkpassword script calls for every XOAUTH2/OAUTHBEARER login on the
API LPS listeners (mailboxes/store/dovecot_lps.py). Reachable from loopback only, with the
shared secret; the token is read from the body and kept nowhere (SC.MSS/CONF.28)."""

from __future__ import annotations

import ipaddress
import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from mailboxes.software.psc import PscUnavailable
from mailboxes.software.sessions import LoginRefused, imap_group, software_login


def _from_dovecot(request: HttpRequest) -> bool:
    try:
        loopback = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
    given = request.headers.get("X-LPS-Secret", "")
    return (
        loopback
        and bool(settings.LPS_AUTH_SECRET)
        and secrets.compare_digest(given.encode(), settings.LPS_AUTH_SECRET.encode())
    )


@csrf_exempt
@require_POST
def dovecot_auth(request: HttpRequest) -> HttpResponse:
    """Body: ``login NUL token NUL`` (checkpassword, fd 3). 200 with the session's extra
    fields (tab-separated, for Dovecot), 403 refused, 503 PSC unreachable (Dovecot then
    answers a temporary failure), 404 to anyone but Dovecot."""
    if not _from_dovecot(request):
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
    try:
        session = software_login(address=address, token=token, service=service, remote=remote)
    except LoginRefused:
        return HttpResponse(status=403)
    except PscUnavailable:
        return HttpResponse(status=503)
    fields = [f"user={session.grant.mailbox.address}"]
    group = imap_group(session.grant)
    if group:
        fields.append(f"userdb_acl_groups={group}")
    return HttpResponse("\t".join(fields), content_type="text/plain")
