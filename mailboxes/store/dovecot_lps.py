"""The API LPS part of the Dovecot instance (mssante-spec §2.2): TLS listeners for mail clients
and care software, SASL XOAUTH2/OAUTHBEARER checked by the portal, and the ACL groups that
carry a session's rights on the BAL. Off (an empty section) while no LPS port is set, so that
the portal's own instance is exactly what it was.

Dovecot's auth workers run ``lps-auth.lua`` (a Lua passdb: long-lived, no process per login)
with the login and the token; it posts them to the portal on loopback with a shared secret
(``LPS_AUTH_URL``, ``LPS_AUTH_SECRET``), and the portal answers ``userdb_acl_groups=<group>``.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from django.conf import settings

DEPLOY = Path(settings.BASE_DIR) / "deploy" / "dovecot"

# IMAP rights (RFC 4314) of each portal right on a BAL (mailboxes.access.Access). Reading:
# lookup and read; organising: flags (\Seen included), \Deleted, copy into another folder and
# expunge, which an IMAP MOVE to the Trash needs (RFC 6851 §3.3): IMAP cannot tell that expunge
# from a deletion for good. Managing: every right.
IMAP_READ = "lr"
IMAP_ORGANISE = "lrswite"
IMAP_MANAGE = "lrwstipekxa"
GROUPS = {rights: f"lps-{rights}" for rights in (IMAP_READ, IMAP_ORGANISE, IMAP_MANAGE)}


def enabled() -> bool:
    return bool(settings.LPS_IMAP_PORT or settings.LPS_IMAPS_PORT)


def _listeners() -> str:
    lines = []
    for name, port, tls in (
        ("lps-imap", settings.LPS_IMAP_PORT, "no"),  # STARTTLS (SC.MSS/CONF.06)
        ("lps-imaps", settings.LPS_IMAPS_PORT, "yes"),
    ):
        if port:
            lines.append(
                f"  inet_listener {name} {{\n    address = {settings.LPS_LISTEN}\n"
                f"    port = {int(port)}\n    ssl = {tls}\n  }}\n"
            )
    return "".join(lines)


def _client_ca() -> tuple[str, bool]:
    """What Dovecot verifies software certificates with (APP BALs, SASL EXTERNAL): the CAs of
    LPS_CLIENT_CA_BUNDLE and the CRLs in force (TLS_CRL_FILE), in one PEM; and whether CRLs are
    there (Dovecot then requires one for each CA). ("", False) when the bundle is unreadable:
    EXTERNAL is then not offered at all."""
    try:
        bundle = Path(settings.LPS_CLIENT_CA_BUNDLE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError, ValueError):
        return "", False
    if "BEGIN CERTIFICATE" not in bundle:
        return "", False
    crls = ""
    if settings.TLS_CRL_FILE:
        try:
            crls = Path(settings.TLS_CRL_FILE).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            crls = ""
    has_crl = "BEGIN X509 CRL" in crls
    return bundle.rstrip() + "\n" + (crls.rstrip() + "\n" if has_crl else ""), has_crl


def section(base_dir: Path) -> str:
    """The configuration appended to dovecot.conf ("" when off)."""
    if not enabled():
        return ""
    client_ca, has_crl = _client_ca()
    external = ""
    if client_ca:
        external = string.Template(
            (DEPLOY / "lps-external.conf.tmpl").read_text(encoding="utf-8")
        ).substitute(base_dir=base_dir, require_crl="yes" if has_crl else "no")
    return string.Template((DEPLOY / "lps.conf.tmpl").read_text(encoding="utf-8")).substitute(
        base_dir=base_dir,
        cert=settings.LPS_TLS_CERT,
        key=settings.LPS_TLS_KEY,
        ciphers=settings.TLS_CIPHERS,
        listeners=_listeners(),
        external_mechanism=" external" if client_ca else "",
        external=external,
    )


def _lua_string(value: str) -> str:
    """``value`` inside a Lua double-quoted string (URLs and paths we configure)."""
    if any(c in value for c in '"\\\n\r'):
        raise ValueError(f"not allowed in a Lua string: {value!r}")
    return value


def write_files(base_dir: Path, write: object, internal_gid: int) -> None:
    """The Lua passdb script, its secret header and the ACL groups, next to the config.
    ``write`` is the instance writer's atomic write (path, content, mode, group)."""
    if not enabled():
        return
    assert callable(write)
    script = string.Template((DEPLOY / "lps-auth.lua.tmpl").read_text(encoding="utf-8"))
    write(
        base_dir / "lps-auth.lua",
        script.substitute(
            url=_lua_string(settings.LPS_AUTH_URL),
            secret_file=_lua_string(str(base_dir / "lps-auth.header")),
            timeout=int(settings.PSC_HTTP_TIMEOUT) + 5,
        ),
        0o644,
        None,
    )
    # Read by Dovecot's auth workers only, never on a command line.
    write(
        base_dir / "lps-auth.header",
        f"X-LPS-Secret: {settings.LPS_AUTH_SECRET}\n",
        0o640,
        internal_gid if os.geteuid() == 0 else None,
    )
    acl = "".join(f"* group-override={group} {rights}\n" for rights, group in GROUPS.items())
    write(base_dir / "lps-acl", acl, 0o644, None)
    client_ca, _has_crl = _client_ca()
    if client_ca:
        write(base_dir / "lps-client-ca.pem", client_ca, 0o644, None)
