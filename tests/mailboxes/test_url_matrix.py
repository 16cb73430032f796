"""Every URL pattern of the portal, for every persona, on objects that belong to someone else:
404 (405 only for a method the URL never accepts), the sign-in redirect when anonymous.

The patterns come from the root URLconf (django.urls.get_resolver()): a pattern added without
a rule here fails test_every_url_pattern_has_a_rule. tests/mailboxes/test_console.py checks the
console of one structure against people outside its direction; this file asks the same URLs
for another structure's objects, from every persona including a director.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import Membership, Structure, User
from mailboxes.models import AppCertificate, Mailbox, MailboxAccess, MailboxExport, MailboxJob
from tests.factories import grant, make_mailbox, make_membership, make_professional, make_structure
from tests.mailboxes.conftest import deliver, wait_provisioned
from tests.mailboxes.xdm_build import xdm

pytestmark = pytest.mark.django_db
# Every URL of the portal, not only the mailboxes': it lives here for the package's private
# Dovecot (one per test session).

SECRET = "Bilan confidentiel de la clinique"

# How each pattern is judged. "object": it names objects (BAL, message, access, export...):
# foreign ones are 404 for every persona, anonymous is sent to sign in. "own": the person's
# own pages (lists, search, compose): signed-in personas get their own view, anonymous signs
# in. "public": sign-in pages and the PSC mock, open to anyone. "staff": the operator's console,
# a 404 for every persona (none is staff), anonymous signs in. Admin patterns are judged
# together (staff only: everyone here is sent to the admin sign-in).
RULES: dict[str, str] = {
    "": "public",
    "connexion/": "public",
    "deconnexion/": "public",
    "deconnecte/": "public",
    "comptes/psc/connexion/": "public",
    "comptes/psc/retour/": "public",
    "comptes/psc/inscription/": "public",
    "comptes/psc/compte-inactif/": "public",
    # The break-glass operator's sign-in and second factor (accounts.operator_urls); the
    # second-factor step of a sign-in is public like the sign-in itself.
    "operateur/connexion/": "public",
    "operateur/deconnexion/": "public",
    "operateur/double-authentification/authenticate/": "public",
    "operateur/reauthentification/": "own",
    "operateur/double-authentification/": "own",
    "operateur/double-authentification/reauthenticate/": "own",
    "operateur/double-authentification/totp/activate/": "own",
    "operateur/double-authentification/totp/deactivate/": "own",
    "operateur/double-authentification/recovery-codes/": "own",
    "operateur/double-authentification/recovery-codes/generate/": "own",
    "operateur/double-authentification/recovery-codes/download/": "own",
    "operateur/double-authentification/webauthn/": "own",
    "operateur/double-authentification/webauthn/add/": "own",
    "operateur/double-authentification/webauthn/reauthenticate/": "own",
    "operateur/double-authentification/webauthn/keys/<int:pk>/remove/": "object",
    "operateur/double-authentification/webauthn/keys/<int:pk>/edit/": "object",
    # The operator's console (mailboxes.operator.console_urls): staff only.
    "operateur/": "staff",
    "operateur/file/<uuid:message_id>/": "staff",
    "operateur/file/<uuid:message_id>/relancer/": "staff",
    "operateur/file/<uuid:message_id>/abandonner/": "staff",
    "operateur/reception/": "staff",
    "operateur/confiance/": "staff",
    "operateur/annuaire/": "staff",
    "operateur/structures/": "staff",
    "operateur/structures/<uuid:structure_id>/": "staff",
    "operateur/bal/<uuid:bal_id>/quota/": "staff",
    "bal/": "own",
    "bal/selecteur/": "own",
    "bal/ecrire/": "own",
    "bal/console/annuaire/": "own",
    "console/annuaire/": "own",
    "bal/destinataires/suggestions/": "own",
    "bal/destinataires/verifier/": "own",
    "bal/<uuid:public_id>/": "object",
    "bal/<uuid:public_id>/ecrire/": "object",
    "bal/<uuid:public_id>/signature/": "object",
    "bal/<uuid:public_id>/absence/": "object",
    "bal/<uuid:public_id>/nouveaux/": "object",
    "bal/<uuid:public_id>/logiciel/": "object",
    "bal/<uuid:public_id>/delegations/": "object",
    "bal/<uuid:public_id>/delegations/accorder/": "object",
    "bal/<uuid:public_id>/delegations/<uuid:access_id>/retirer/": "object",
    "bal/<uuid:public_id>/actions/": "object",
    "bal/<uuid:public_id>/corbeille/vider/": "object",
    "bal/<uuid:public_id>/corbeille/annuler/": "object",
    "bal/<uuid:public_id>/dossiers/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/imprimer/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/apercu/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/apercu/fichier/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/accuse/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/prise-en-charge/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/contenu/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/": "object",
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/cda/": (
        "object"
    ),
    "bal/<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/pdf/": (
        "object"
    ),
    "annuaire/": "own",
    "annuaire/suggestions/": "own",
    "console/": "own",
    "console/<uuid:structure_id>/": "object",
    "console/<uuid:structure_id>/bal/nouvelle/<slug:kind>/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/modifier/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/droits/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/droits/<uuid:access_id>/retirer/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/etat/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/notification/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/quota/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/exporter/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/fermer/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/certificats/": "object",
    "console/<uuid:structure_id>/bal/<uuid:bal_id>/certificats/<uuid:certificate_id>/retirer/": (
        "object"
    ),
    "console/<uuid:structure_id>/taches/<uuid:job_id>/": "object",
    "console/<uuid:structure_id>/documents-de-sante/": "object",
    "console/<uuid:structure_id>/exports/<uuid:export_id>/": "object",
    "console/<uuid:structure_id>/personnes/": "object",
    "console/<uuid:structure_id>/personnes/<uuid:membership_id>/role/": "object",
    "console/<uuid:structure_id>/personnes/<uuid:membership_id>/retirer/": "object",
    "console/<uuid:structure_id>/cle/": "object",
    "console/<uuid:structure_id>/journal/": "object",
    "console/<uuid:structure_id>/journal.csv": "object",
    "console/<uuid:structure_id>/indicateurs/": "object",
    "console/<uuid:structure_id>/indicateurs.csv": "object",
    "sante/": "public",
    "sante/pret/": "public",
    # No sign-in: answered to METRICS_NETWORKS or a METRICS_TOKEN only, a 404 to anyone
    # else (tests/mailboxes/test_metrics.py); here, with neither set, a 404 to everyone.
    "sante/metriques": "public",
    "_dev/psc/auth/realms/esante-wallet": "public",
    "_dev/psc/auth/realms/esante-wallet/.well-known/wallet-openid-configuration": "public",
    "_dev/psc/wallet/auth": "public",
    "_dev/psc/auth/realms/esante-wallet/protocol/openid-connect/token": "public",
    "_dev/psc/auth/realms/esante-wallet/protocol/openid-connect/userinfo": "public",
    "_dev/psc/auth/realms/esante-wallet/protocol/openid-connect/certs": "public",
    "_dev/psc/auth/realms/esante-wallet/protocol/openid-connect/logout": "public",
    "_dev/psc/auth/realms/esante-wallet/protocol/openid-connect/token/introspect": "public",
    "_dev/psc/auth/realms/esante-wallet/protocol/openid-connect/revoke": "public",
    # Software access: Dovecot's login check (404 to anyone but Dovecot on loopback with the
    # secret) and mail clients' auto-configuration (404 for a domain we do not host).
    "logiciels/dovecot/auth": "public",
    ".well-known/autoconfig/mail/config-v1.1.xml": "public",
    "mail/config-v1.1.xml": "public",
}
ADMIN_PREFIX = "operateur/admin/"
XDM_BASE64 = base64.encodebytes(xdm()).decode()
# No PSC is served over HTTP in these tests: starting a sign-in gives the deliberate
# « Pro Santé Connect injoignable » page (accounts.psc.adapter), a 502, never a crash.
UPSTREAM_DOWN = {"comptes/psc/connexion/": 502}


def no_crash(route: str, response: Any) -> bool:
    return response.status_code < 500 or response.status_code == UPSTREAM_DOWN.get(route)


def resolved_routes() -> list[str]:
    """Every pattern of the root URLconf, as its full route text."""

    def walk(resolver: URLResolver, prefix: str) -> list[str]:
        found = []
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                found += walk(pattern, prefix + str(pattern.pattern))
            else:
                assert isinstance(pattern, URLPattern)
                found.append(prefix + str(pattern.pattern))
        return found

    return walk(get_resolver(), "")


def concrete(route: str, values: dict[str, Any]) -> str:
    """The route with its parameters filled in (path converters and the admin's regexes)."""
    url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values.get(m.group(1), "1")), route)
    url = url.replace("(?P<url>.*)", "inconnu/")
    url = re.sub(r"\(\?P<app_label>[^)]*\)", "accounts", url)
    # The webmail's pages name their folder; without it a message page is a 404 for anyone.
    query = "?dossier=INBOX" if route.startswith("bal/<uuid:") else ""
    return "/" + url.replace("^", "").replace("$", "") + query


@dataclass
class World:
    personas: dict[str, User]
    owner: User  # holds the foreign PER BAL
    other_director: User  # directs the foreign structure
    values: dict[str, Any]  # the foreign objects, by URL parameter
    own: dict[str, Any]  # the Tilleuls objects, to mix with foreign ones


@pytest.fixture
def world(dovecot) -> World:
    tilleuls = make_structure()
    clinique = make_structure(
        name="Clinique du Parc", finess="690002365", domain="clinique-du-parc.mssante.fr"
    )
    doctor = make_professional(first_name="Claire", last_name="Martin")
    secretary = make_professional(first_name="Sophie", last_name="Secrétaire", profession="")
    nurse = make_professional(first_name="Inès", last_name="Infirmière", profession="60")
    director = make_professional(first_name="Hélène", last_name="Directrice")
    outsider = make_professional(first_name="Olivier", last_name="Dehors")
    make_membership(director, tilleuls, Membership.Role.DIRECTOR)
    for person in (doctor, secretary, nurse):
        make_membership(person, tilleuls)
    per = make_mailbox(structure=tilleuls, owner=doctor)
    soins = make_mailbox(
        structure=tilleuls, kind="ORG", local_part="soins", responsible=director,
        display_name="Soins",
    )  # fmt: skip
    grant(soins, nurse, can_send=True)
    own_delegation = grant(per, secretary, can_send=True)

    # The other structure: its director, a doctor with a PER BAL (a message with an
    # attachment), an ORG BAL with a member, an export, a delegation.
    other_director = make_professional(first_name="Paul", last_name="Autre")
    owner = make_professional(first_name="Marc", last_name="Durand")
    colleague = make_professional(first_name="Léa", last_name="Morel", profession="60")
    make_membership(other_director, clinique, Membership.Role.DIRECTOR)
    membership = make_membership(owner, clinique)
    make_membership(colleague, clinique)
    per2 = make_mailbox(structure=clinique, local_part="marc.durand", owner=owner)
    accueil = make_mailbox(
        structure=clinique, kind="ORG", local_part="accueil", responsible=other_director,
        display_name="Accueil",
    )  # fmt: skip
    member = grant(accueil, colleague, can_send=True)
    delegation = grant(per2, colleague, can_send=True)
    export = MailboxExport.objects.create(
        mailbox=accueil, purpose="export", path="x", size=1, sha256="0" * 64, messages=0,
        folders=0, key_fingerprint="F" * 40,
    )  # fmt: skip
    job = MailboxJob.objects.create(mailbox=accueil, kind="export", state="termine", export=export)
    certificate = AppCertificate.objects.create(
        mailbox=accueil, fingerprint="a" * 64, common_name="robot.clinique-test.fr", subject="x",
        issuer="x", serial="1", not_after=timezone.now() + timedelta(days=30), pem="x",
    )  # fmt: skip
    wait_provisioned(per.address, soins.address, per2.address, accueil.address)
    deliver(
        per2.address,
        (
            f"From: labo@operateur-test.mssante.fr\r\nTo: {per2.address}\r\nSubject: {SECRET}\r\n"
            "MIME-Version: 1.0\r\nDisposition-Notification-To: labo@operateur-test.mssante.fr\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Resultat</p>\r\n--b\r\n"
            # Its attachment is a health-document archive: the document pages answer too.
            "Content-Type: application/zip\r\n"
            'Content-Disposition: attachment; filename="IHE_XDM.ZIP"'
            f"\r\nContent-Transfer-Encoding: base64\r\n\r\n{XDM_BASE64}\r\n--b--\r\n"
        ).encode(),
    )
    values = {
        "public_id": per2.public_id,
        "uid": 1,
        "index": 1,
        "access_id": delegation.public_id,
        "structure_id": clinique.public_id,
        "bal_id": accueil.public_id,
        "kind": "org",
        "export_id": export.public_id,
        "job_id": job.public_id,
        "membership_id": membership.public_id,
        "member_access_id": member.public_id,
        "certificate_id": certificate.public_id,
        "message_id": per2.public_id,  # no such spooled message: the guard answers first
    }
    own = {
        "public_id": per.public_id,
        "structure_id": tilleuls.public_id,
        "bal_id": soins.public_id,
        "access_id": own_delegation.public_id,
    }
    personas = {
        "doctor": doctor,
        "secretary": secretary,
        "nurse": nurse,
        "director": director,
        "outsider": outsider,
    }
    return World(personas, owner, other_director, values, own)


def signed_in(user: User) -> Client:
    """A session as after a recent Pro Santé Connect sign-in (sensitive pages need one)."""
    client = Client()
    client.force_login(user)
    session = client.session
    session[AUTH_AT_SESSION_KEY] = int(time.time())
    session.save()
    return client


def ask(client: Client, method: str, url: str) -> Any:
    return client.get(url) if method == "GET" else client.post(url, {})


def test_every_url_pattern_has_a_rule() -> None:
    routes = set(resolved_routes())
    portal = {r for r in routes if not r.startswith(ADMIN_PREFIX)}
    assert portal == set(RULES), (
        f"no rule for {sorted(portal - set(RULES))}; stale rules {sorted(set(RULES) - portal)}"
    )
    assert settings.PSC_MOCK_ENABLED  # the mock's URLs are part of this run


def test_foreign_objects_answer_404_to_every_persona(world: World) -> None:
    objects = [r for r, rule in RULES.items() if rule == "object"]
    owner_of = {  # who legitimately uses the foreign objects (the positive control)
        "bal/": signed_in(world.owner),
        "console/": signed_in(world.other_director),
    }
    checked = 0
    for name, persona in world.personas.items():
        client = signed_in(persona)
        for route in objects:
            url = concrete(route, world.values)
            for method in ("GET", "POST"):
                response = ask(client, method, url)
                assert response.status_code in (404, 405), (name, method, url)
                assert SECRET not in response.content.decode(errors="replace")
                if response.status_code == 405:
                    # Only for a method the URL refuses to its rightful user too.
                    legit = owner_of[route.split("/")[0] + "/"]
                    assert ask(legit, method, url).status_code == 405, (name, method, url)
                checked += 1
    assert checked == len(world.personas) * len(objects) * 2
    # The same URLs are not 404 for everyone: the owner reads the message and its attachment,
    # the other director opens the console of the clinique.
    owner = owner_of["bal/"]
    for route in objects:
        if route.startswith("bal/") and "retirer" not in route and "/apercu/" not in route:
            # 200, 204 for the polling that has nothing to announce, or 405 where the URL
            # only takes POST (an action). The attachment here is a ZIP, which has no preview
            # (404 for its owner too: test_reading_organising shows a PDF's and an image's).
            assert owner.get(concrete(route, world.values)).status_code in (200, 204, 405), route
    director = owner_of["console/"]
    for suffix in ("", "personnes/", "journal/", f"bal/{world.values['bal_id']}/"):
        url = f"/console/{world.values['structure_id']}/{suffix}"
        assert director.get(url).status_code == 200, url


def test_the_operator_console_is_404_for_every_persona(world: World) -> None:
    staff_routes = [r for r, rule in RULES.items() if rule == "staff"]
    values = world.values
    for name, persona in world.personas.items():
        client = signed_in(persona)
        for route in staff_routes:
            url = concrete(route, values)
            for method in ("GET", "POST"):
                assert ask(client, method, url).status_code == 404, (name, method, url)
    # Not vacuous: the same pages open for a professional marked staff.
    operator = world.personas["director"]
    operator.is_staff = True
    operator.save(update_fields=["is_staff"])
    client = signed_in(operator)
    assert client.get("/operateur/").status_code == 200
    assert (
        client.get(concrete("operateur/structures/<uuid:structure_id>/", values)).status_code == 200
    )


def test_own_object_with_a_foreign_child_is_404(world: World) -> None:
    """A URL mixing one's own BAL or structure with another's access, export or member."""
    v, own = world.values, world.own
    mixed = [
        ("doctor", f"/bal/{own['public_id']}/delegations/{v['access_id']}/retirer/"),
        ("director", f"/console/{own['structure_id']}/bal/{v['bal_id']}/"),
        ("director", f"/console/{own['structure_id']}/bal/{v['bal_id']}/fermer/"),
        (
            "director",
            f"/console/{own['structure_id']}/bal/{own['bal_id']}/droits/"
            f"{v['member_access_id']}/retirer/",
        ),
        ("director", f"/console/{own['structure_id']}/exports/{v['export_id']}/"),
        ("director", f"/console/{own['structure_id']}/taches/{v['job_id']}/"),
        ("director", f"/console/{own['structure_id']}/personnes/{v['membership_id']}/role/"),
        ("director", f"/console/{own['structure_id']}/personnes/{v['membership_id']}/retirer/"),
    ]
    for name, url in mixed:
        client = signed_in(world.personas[name])
        for method in ("GET", "POST"):
            response = ask(client, method, url)
            assert response.status_code in (404, 405), (name, method, url)
    assert MailboxAccess.objects.filter(public_id=v["access_id"]).exists()
    assert Membership.objects.filter(public_id=v["membership_id"]).exists()
    assert Structure.objects.count() == 2


def test_anonymous_is_sent_to_sign_in_everywhere_but_public_pages(world: World) -> None:
    anonymous = Client()
    login = "/connexion/"
    for route, rule in RULES.items():
        url = concrete(route, world.values)
        for method in ("GET", "POST"):
            response = ask(anonymous, method, url)
            assert no_crash(route, response), (method, url)
            if rule == "public":
                continue
            assert response.status_code in (302, 405), (method, url, response.status_code)
            if response.status_code == 302:
                # The operator's pages may send to the operator's own sign-in.
                signs_in = (login, "/operateur/") if route.startswith("operateur/") else (login,)
                assert response["Location"].startswith(signs_in), (method, url)


def test_own_pages_never_fail_nor_show_foreign_mail(world: World) -> None:
    for name, persona in world.personas.items():
        client = signed_in(persona)
        for route in (r for r, rule in RULES.items() if rule in ("own", "public")):
            if route == "deconnexion/":
                continue  # would end the session the loop goes on with
            for method in ("GET", "POST"):
                response = ask(client, method, concrete(route, world.values))
                assert no_crash(route, response), (name, method, route)
                assert SECRET not in response.content.decode(errors="replace")


def test_the_admin_is_closed_to_every_persona(world: World) -> None:
    admin = [r for r in resolved_routes() if r.startswith(ADMIN_PREFIX)]
    assert len(admin) > 20
    clients = {"anonymous": Client(), "director": signed_in(world.personas["director"])}
    open_to_all = {"login/", "logout/", "jsi18n/"}
    for name, client in clients.items():
        for route in admin:
            url = concrete(route, {})
            for method in ("GET", "POST"):
                response = ask(client, method, url)
                assert response.status_code < 500, (name, method, url)
                if route.removeprefix(ADMIN_PREFIX) in open_to_all:
                    continue
                assert response.status_code in (302, 404, 405), (name, method, url)
                if response.status_code == 302:
                    assert "/operateur/admin/login/" in response["Location"], (name, url)


def test_a_persona_sees_their_own_bal(world: World) -> None:
    """The matrix is not vacuous: the same client reaches its own BAL."""
    client = signed_in(world.personas["doctor"])
    assert client.get(f"/bal/{world.own['public_id']}/").status_code == 200
    assert Mailbox.objects.filter(public_id=world.values["public_id"]).exists()
