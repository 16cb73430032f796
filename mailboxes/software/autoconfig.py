"""How mail clients and software find our servers (SC.MSS/CONF.04): DNS SRV records (RFC 6186)
for every domain we host, and the autoconfig document mail clients fetch
(``/.well-known/autoconfig/mail/config-v1.1.xml``, Thunderbird's format)."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

from django.conf import settings

from accounts.models import StructureDomain
from mailboxes.software.psc import issuer

SRV_TTL = 3600


@dataclass(frozen=True)
class Endpoint:
    service: str  # RFC 6186 §3: imap, imaps, submission
    host: str
    port: int  # 0: not offered here
    socket: str  # STARTTLS or SSL (autoconfig's socketType)


def endpoints() -> list[Endpoint]:
    """The client-facing services, with the ports configured for them (off when empty)."""
    return [
        Endpoint("imap", settings.LPS_IMAP_HOSTNAME, int(settings.LPS_IMAP_PORT or 0), "STARTTLS"),
        Endpoint("imaps", settings.LPS_IMAP_HOSTNAME, int(settings.LPS_IMAPS_PORT or 0), "SSL"),
        Endpoint(
            "submission",
            settings.LPS_SUBMISSION_HOSTNAME,
            int(settings.LPS_SUBMISSION_PORT or 0),
            "STARTTLS",
        ),
    ]


def hosted_domains() -> list[str]:
    return sorted(StructureDomain.objects.values_list("domain", flat=True).distinct())


def srv_records(domains: list[str]) -> list[str]:
    """Zone-file lines. RFC 6186 §3.4 (priority 0, weight 1); a service we do not offer is
    published with the target "." (RFC 2782, RFC 6186 §4: "not available")."""
    lines = []
    for domain in domains:
        for e in endpoints():
            name = f"_{e.service}._tcp.{domain}."
            if e.port:
                lines.append(f"{name} {SRV_TTL} IN SRV 0 1 {e.port} {e.host}.")
            else:
                lines.append(f"{name} {SRV_TTL} IN SRV 0 0 0 .")
    return lines


def autoconfig_xml(domain: str, display_name: str) -> str:
    """Thunderbird's autoconfig (config-v1.1): IMAP and submission with OAuth2 (a PSC token)."""
    servers = []
    for e in endpoints():
        if not e.port:
            continue
        kind, tag = (
            ("smtp", "outgoingServer") if e.service == "submission" else ("imap", "incomingServer")
        )
        servers.append(
            f'    <{tag} type="{kind}">\n'
            f"      <hostname>{escape(e.host)}</hostname>\n"
            f"      <port>{e.port}</port>\n"
            f"      <socketType>{e.socket}</socketType>\n"
            "      <authentication>OAuth2</authentication>\n"
            "      <username>%EMAILADDRESS%</username>\n"
            f"    </{tag}>\n"
        )
    psc = issuer()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f'  <emailProvider id="{escape(domain)}">\n'
        f"    <domain>{escape(domain)}</domain>\n"
        f"    <displayName>{escape(display_name)}</displayName>\n"
        f"    <displayShortName>MSSanté</displayShortName>\n"
        f"{''.join(servers)}"
        "  </emailProvider>\n"
        "  <oAuth2>\n"
        f"    <issuer>{escape(psc)}</issuer>\n"
        "    <scope>openid scope_all</scope>\n"
        f"    <authURL>{escape(psc)}/protocol/openid-connect/auth</authURL>\n"
        f"    <tokenURL>{escape(psc)}/protocol/openid-connect/token</tokenURL>\n"
        "  </oAuth2>\n"
        "</clientConfig>\n"
    )
