"""How clients find us (SC.MSS/CONF.04): SRV zone lines (RFC 6186), Thunderbird's autoconfig
document, and the « Connecter un logiciel » page of the webmail."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from django.core.management import call_command

from tests.factories import grant, make_mailbox, make_professional, make_structure
from tests.personas import client_for

pytestmark = pytest.mark.django_db

DOMAIN = "ehpad-les-tilleuls.mssante.fr"


@pytest.fixture
def lps_ports(settings) -> None:
    settings.LPS_IMAP_PORT = "143"
    settings.LPS_IMAPS_PORT = "993"
    settings.LPS_SUBMISSION_PORT = "587"
    settings.LPS_IMAP_HOSTNAME = "imap.operateur.example"
    settings.LPS_SUBMISSION_HOSTNAME = "smtp.operateur.example"


def test_srv_records_for_every_hosted_domain(lps_ports, capsys) -> None:
    make_structure()
    call_command("print_srv_records")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"_imap._tcp.{DOMAIN}. 3600 IN SRV 0 1 143 imap.operateur.example.",
        f"_imaps._tcp.{DOMAIN}. 3600 IN SRV 0 1 993 imap.operateur.example.",
        f"_submission._tcp.{DOMAIN}. 3600 IN SRV 0 1 587 smtp.operateur.example.",
    ]


def test_a_service_we_do_not_offer_is_published_as_absent(settings, capsys) -> None:
    settings.LPS_IMAP_PORT = settings.LPS_IMAPS_PORT = settings.LPS_SUBMISSION_PORT = ""
    call_command("print_srv_records", DOMAIN)
    assert capsys.readouterr().out.splitlines()[0] == f"_imap._tcp.{DOMAIN}. 3600 IN SRV 0 0 0 ."


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (f"/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=claire@{DOMAIN}", None),
        ("/mail/config-v1.1.xml", f"autoconfig.{DOMAIN}"),
    ],
)
def test_autoconfig_for_a_hosted_domain(lps_ports, client, settings, url, host) -> None:
    make_structure()
    if host:
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, host]
    response = client.get(url, **({"HTTP_HOST": host} if host else {}))
    assert response.status_code == 200
    root = ElementTree.fromstring(response.content)  # noqa: S314 (our own answer)
    incoming = root.findall("./emailProvider/incomingServer")
    outgoing = root.find("./emailProvider/outgoingServer")
    assert root.findtext("./emailProvider/domain") == DOMAIN
    assert [(s.findtext("port"), s.findtext("socketType")) for s in incoming] == [
        ("143", "STARTTLS"),
        ("993", "SSL"),
    ]
    assert outgoing is not None and outgoing.findtext("port") == "587"
    assert {s.findtext("authentication") for s in [*incoming, outgoing]} == {"OAuth2"}


def test_autoconfig_knows_only_our_domains(lps_ports, client) -> None:
    response = client.get("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=x@gmail.com")
    assert response.status_code == 404


def test_connect_page_shows_the_settings_of_the_bal(lps_ports, dovecot) -> None:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    folder = client_for(doctor).get(f"/bal/{box.public_id}/?dossier=INBOX")
    assert "Connecter un logiciel" in folder.content.decode()
    page = client_for(doctor).get(f"/bal/{box.public_id}/logiciel/").content.decode()
    assert "imap.operateur.example" in page and "smtp.operateur.example" in page
    assert box.address in page and "OAUTHBEARER" in page
    assert "SASL EXTERNAL" not in page  # a PER BAL opens with its holder's PSC sign-in only


def test_connect_page_of_an_app_bal_tells_of_its_software_certificate(lps_ports, dovecot) -> None:
    director = make_professional()
    box = make_mailbox(
        structure=make_structure(), kind="APP", local_part="dui", responsible=director
    )
    grant(box, director)  # a member of the software's BAL reads it in the webmail too
    page = client_for(director).get(f"/bal/{box.public_id}/logiciel/").content.decode()
    assert "SASL EXTERNAL" in page and "Logiciels autorisés" in page


def test_connect_page_of_someone_elses_bal_is_404(lps_ports) -> None:
    box = make_mailbox(structure=make_structure(), owner=make_professional())
    outsider = make_professional(first_name="Paul")
    assert client_for(outsider).get(f"/bal/{box.public_id}/logiciel/").status_code == 404
