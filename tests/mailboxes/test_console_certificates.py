"""The director binds a software's certificate to an APP BAL (issue 18), over HTTP: what is
accepted is exactly what would open the BAL at login; anything else gets a clear French
answer and stores nothing. Login with the bound certificate: tests/mailboxes/software/."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, TestCase
from django.urls import reverse

from accounts.audit import Action
from accounts.models import AuditEvent, Membership
from devtools.pki import issue_crl
from mailboxes.models import AppCertificate
from mailboxes.store import dovecot
from mailboxes.transport.crl_sync import crl_sync
from tests.factories import make_mailbox, make_membership, make_professional, make_structure
from tests.mailboxes.test_console import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def place(dovecot, pki, settings) -> dict[str, Any]:
    settings.LPS_CLIENT_CA_BUNDLE = str(pki["ca"].cert)
    structure = make_structure()
    director = make_professional(first_name="Hélène", last_name="Directrice")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    dui = make_mailbox(structure=structure, kind="APP", local_part="dui", responsible=director)
    lab = make_mailbox(structure=structure, kind="APP", local_part="labo", responsible=director)
    per = make_mailbox(structure=structure, owner=make_professional())
    return {"structure": structure, "director": director, "dui": dui, "lab": lab, "per": per}


def _bal_url(place: dict[str, Any], box: str = "dui") -> str:
    return reverse("console:bal", args=[place["structure"].public_id, place[box].public_id])


def _add(client: Client, place: dict[str, Any], box: str = "dui", **data: Any) -> str:
    url = reverse(
        "console:certificate_add", args=[place["structure"].public_id, place[box].public_id]
    )
    response = client.post(url, data, follow=True)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def _file(path: Path | str, name: str = "logiciel.pem") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, Path(path).read_bytes())


def test_the_director_binds_a_certificate_file_and_sees_it(place, pki) -> None:
    client = signed_in(place["director"])
    page = _add(client, place, certificate=_file(pki["software"].cert))

    assert "Le logiciel « dui.ehpad-test.fr » peut désormais ouvrir" in page
    bound = AppCertificate.objects.get()
    assert bound.mailbox == place["dui"] and bound.common_name == "dui.ehpad-test.fr"
    assert bound.fingerprint.upper() in page  # shown to compare with the software's own
    trace = AuditEvent.objects.get(action=Action.SOFTWARE_CERTIFICATE_BOUND)
    assert trace.actor == place["director"] and trace.details["fingerprint"] == bound.fingerprint


def test_pasted_pem_text_works_too(place, pki) -> None:
    page = _add(signed_in(place["director"]), place, pem=Path(pki["software"].cert).read_text())
    assert "peut désormais ouvrir" in page and AppCertificate.objects.count() == 1


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("garbage", "n'est pas un certificat lisible"),
        ("empty", "n'est pas un certificat"),
        ("key", "clé privée"),
        ("chain", "un seul certificat"),
        ("ca", "certificat d'une autorité"),
        ("foreign", "autorité reconnue"),
        ("expired", "a expiré"),
        ("huge", "n'est pas un certificat"),
    ],
)
def test_what_would_not_open_the_bal_is_refused_clearly(place, pki, given, said) -> None:
    software = Path(pki["software"].cert).read_bytes()
    data = {
        "garbage": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "empty": b"",
        "key": software + Path(pki["software"].key).read_bytes(),
        "chain": software + Path(pki["ca"].cert).read_bytes(),
        "ca": Path(pki["ca"].cert).read_bytes(),
        "foreign": Path(pki["software-foreign"].cert).read_bytes(),
        "expired": Path(pki["expired"].cert).read_bytes(),
        "huge": b"0" * 200_000,
    }[given]
    page = _add(signed_in(place["director"]), place, certificate=SimpleUploadedFile("x.pem", data))
    assert said in page
    assert not AppCertificate.objects.exists()
    assert not AuditEvent.objects.filter(action=Action.SOFTWARE_CERTIFICATE_BOUND).exists()


def test_only_an_app_bal_takes_a_certificate(place, pki) -> None:
    page = _add(signed_in(place["director"]), place, "per", certificate=_file(pki["software"].cert))
    assert "Seule une BAL applicative" in page and not AppCertificate.objects.exists()


def test_one_name_opens_one_bal(place, pki, tmp_path) -> None:
    """IMAP knows the certificate by its CN only: a second BAL for the same CN is refused,
    and the same certificate twice too."""
    client = signed_in(place["director"])
    _add(client, place, certificate=_file(pki["software"].cert))
    again = _add(client, place, certificate=_file(pki["software"].cert))
    assert "déjà lié" in again
    other_bal = _add(client, place, "lab", certificate=_file(pki["software"].cert))
    assert "déjà lié" in other_bal
    assert AppCertificate.objects.count() == 1


def test_binding_and_unbinding_need_a_recent_sign_in(place, pki) -> None:
    stale = signed_in(place["director"], recent=False)
    url = reverse(
        "console:certificate_add", args=[place["structure"].public_id, place["dui"].public_id]
    )
    response = stale.post(url, {"certificate": _file(pki["software"].cert)})
    assert response.status_code in (302, 401) and not AppCertificate.objects.exists()


def test_the_director_unbinds_and_it_is_traced(place, pki, monkeypatch) -> None:
    client = signed_in(place["director"])
    _add(client, place, certificate=_file(pki["software"].cert))
    bound = AppCertificate.objects.get()
    kicked: list[str] = []
    monkeypatch.setattr(
        dovecot, "sessions_kick", lambda address, remote=None: kicked.append(address)
    )
    url = reverse(
        "console:certificate_remove",
        args=[place["structure"].public_id, place["dui"].public_id, bound.public_id],
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        page = html.unescape(client.post(url, follow=True).content.decode())
    assert "n'ouvre plus" in page and not AppCertificate.objects.exists()
    assert kicked == [place["dui"].address]  # its IMAP sessions end at once
    assert AuditEvent.objects.filter(action=Action.SOFTWARE_CERTIFICATE_UNBOUND).count() == 1


def test_another_structures_director_gets_404(place, pki) -> None:
    client = signed_in(place["director"])
    _add(client, place, certificate=_file(pki["software"].cert))
    bound = AppCertificate.objects.get()
    other = make_structure(name="Clinique du Parc", finess="690002365",
                           domain="clinique-du-parc.mssante.fr")  # fmt: skip
    intruder = make_professional(first_name="Paul", last_name="Autre")
    make_membership(intruder, other, Membership.Role.DIRECTOR)
    url = reverse(
        "console:certificate_remove",
        args=[place["structure"].public_id, place["dui"].public_id, bound.public_id],
    )
    assert signed_in(intruder).post(url).status_code == 404
    assert AppCertificate.objects.filter(pk=bound.pk).exists()


# --- Revocation: the CRLs in force (IGC-Santé) ---------------------------------------------------


def _revoke_software(pki, settings, tmp_path) -> None:
    """A CRL of the test CA that revokes the software's certificate, put in force by sync_crl."""
    settings.TLS_CRL_FILE = str(tmp_path / "tls" / "crl.pem")
    settings.GATEWAY_CA_BUNDLE = settings.RELAY_CA_BUNDLE = str(pki["ca"].cert)
    crl = tmp_path / "revoque.crl"
    issue_crl(Path(pki["ca"].cert).parent, revoked=[Path(pki["software"].cert)], out=crl)
    assert crl_sync(sources=[str(crl)]).result == "success"


def test_a_sync_that_revokes_a_bound_certificate_unbinds_it_and_ends_its_sessions(
    place, pki, settings, tmp_path, monkeypatch
) -> None:
    _add(signed_in(place["director"]), place, certificate=_file(pki["software"].cert))
    kicked: list[str] = []
    monkeypatch.setattr(
        dovecot, "sessions_kick", lambda address, _remote=None: kicked.append(address)
    )

    _revoke_software(pki, settings, tmp_path)

    assert not AppCertificate.objects.exists() and kicked == [place["dui"].address]
    trace = AuditEvent.objects.get(action=Action.SOFTWARE_CERTIFICATE_UNBOUND)
    assert trace.details["reason"] == "revoked" and trace.actor_label == "synchronisation LCR"


def test_a_revoked_certificate_cannot_be_bound(place, pki, settings, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(dovecot, "sessions_kick", lambda *_args: None)
    _revoke_software(pki, settings, tmp_path)
    page = _add(signed_in(place["director"]), place, certificate=_file(pki["software"].cert))
    assert "révoqué" in page and not AppCertificate.objects.exists()
    # Another certificate of the same CA, not revoked, still can.
    page = _add(signed_in(place["director"]), place, certificate=_file(pki["software-other"].cert))
    assert "peut désormais ouvrir" in page
