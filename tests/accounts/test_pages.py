from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import Client

from accounts.models import AuditEvent, Membership, Structure, User
from tests.factories import make_membership, make_professional, make_structure, sign_in_operator

pytestmark = pytest.mark.django_db


def test_home_requires_sign_in(client: Client) -> None:
    r = client.get("/")
    assert r.status_code == 302
    assert r["Location"] == "/connexion/?next=/"


def test_login_page_is_french_and_posts_to_psc_with_csrf(client: Client) -> None:
    r = client.get("/connexion/")
    html = r.content.decode()
    assert r.status_code == 200
    assert '<html lang="fr">' in html
    assert "Se connecter avec Pro Santé Connect" in html
    assert 'action="/comptes/psc/connexion/"' in html
    assert "csrfmiddlewaretoken" in html


def test_strict_content_security_policy(client: Client) -> None:
    csp = client.get("/connexion/")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_pages_carry_no_inline_script_or_style(client: Client) -> None:
    html = client.get("/connexion/").content.decode()
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert 'src="/static/vendor/htmx-2.0.11.min.js"' in html


def test_htmx_requests_carry_the_csrf_token(client: Client) -> None:
    html = client.get("/connexion/").content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in html


def test_unknown_page_is_a_french_404(client: Client, settings) -> None:
    settings.DEBUG = False
    r = client.get("/nulle-part/")
    assert r.status_code == 404
    assert "Page introuvable" in r.content.decode()


def test_home_lists_identity_and_structures(client: Client) -> None:
    structure = make_structure(name="EHPAD Les Tilleuls")
    user = make_professional(first_name="Claire", last_name="Martin", profession="10")
    make_membership(user, structure, role="director")
    client.force_login(user)

    html = client.get("/").content.decode()

    assert "Claire Martin" in html
    assert "Médecin" in html
    assert "Se déconnecter" in html


def test_unknown_profession_code_is_shown_as_a_code_not_guessed(client: Client) -> None:
    user = make_professional(profession="ZZ")
    client.force_login(user)
    assert "Profession (code ZZ)" in client.get("/").content.decode()


def test_professionals_cannot_reach_the_admin(client: Client) -> None:
    client.force_login(make_professional())
    r = client.get("/operateur/admin/")
    assert r.status_code == 302 and "/operateur/admin/login/" in r["Location"]


def test_break_glass_operator_reaches_the_admin_and_role_changes_are_traced(client: Client) -> None:
    operator = User.objects.create_superuser("operateur", password="x-Long-Passw0rd!")
    structure = make_structure()
    nurse = make_professional()
    sign_in_operator(client, operator, "x-Long-Passw0rd!")

    assert client.get("/operateur/admin/accounts/structure/").status_code == 200
    r = client.post(
        "/operateur/admin/accounts/membership/add/",
        {"user": nurse.pk, "structure": structure.pk, "role": "director"},
    )

    assert r.status_code == 302
    assert Membership.objects.get(user=nurse).role == "director"
    event = AuditEvent.objects.get(action="membership.role_changed")
    assert event.actor == operator and event.details["new_role"] == "director"


def test_admin_refuses_a_structure_with_a_bad_finess(client: Client) -> None:
    operator = User.objects.create_superuser("operateur", password="x-Long-Passw0rd!")
    sign_in_operator(client, operator, "x-Long-Passw0rd!")

    r = client.post(
        "/operateur/admin/accounts/structure/add/",
        {
            "identifier_kind": "finess_eg",
            "identifier": "690001236",
            "name": "X",
            "domains-TOTAL_FORMS": "0",
            "domains-INITIAL_FORMS": "0",
        },
    )

    assert r.status_code == 200
    assert "La clé du numéro FINESS 690001236 est incorrecte" in r.content.decode()
    assert not Structure.objects.exists()


def test_psc_mock_is_refused_in_production_without_demo_flag(settings) -> None:
    settings.PSC_MOCK_ENABLED = True
    settings.DEBUG = False
    settings.PORTAL_DEMO = False
    assert "mssante.E001" in [m.id for m in run_checks()]
    settings.PORTAL_DEMO = True
    assert "mssante.E001" not in [m.id for m in run_checks()]


def test_only_a_demos_own_psc_mock_may_be_reached_over_http_in_production(settings) -> None:
    """`make prod-check`: the portal calls its mock by the compose service name."""
    settings.PORTAL_ENV = "production"
    settings.PSC_MOCK_ENABLED = True
    settings.PSC_DISCOVERY_URL = (
        "http://web:8000/_dev/psc/auth/realms/esante-wallet/.well-known/wallet-openid-configuration"
    )
    assert "mssante.E004" not in [m.id for m in run_checks()]
    settings.PSC_MOCK_ENABLED = False
    assert "mssante.E004" in [m.id for m in run_checks()]
    settings.PSC_DISCOVERY_URL = (
        "http://auth.esw.esante.gouv.fr/.well-known/wallet-openid-configuration"
    )
    settings.PSC_MOCK_ENABLED = True
    assert "mssante.E004" in [m.id for m in run_checks()]


def test_load_demo_is_idempotent() -> None:
    call_command("load_demo")
    call_command("load_demo")

    assert Structure.objects.count() == 3
    director = User.objects.get(national_id="899700120068")
    assert set(
        Membership.objects.filter(user=director, role="director").values_list(
            "structure__identifier", flat=True
        )
    ) == {
        "690001235",
        "710004565",
    }
    nurse = User.objects.get(national_id="899700120027")
    assert Membership.objects.filter(user=nurse).count() == 2
    assert not nurse.has_usable_password()


def test_break_glass_operator_reaches_the_admin_only(client: Client) -> None:
    operator = User.objects.create_superuser("operateur", password="x-Long-Passw0rd!")
    sign_in_operator(client, operator, "x-Long-Passw0rd!")

    for url in ("/", "/bal/"):
        r = client.get(url)
        assert r.status_code == 403
        assert "Compte opérateur" in r.content.decode()
    assert client.get("/operateur/admin/").status_code == 200
