"""The IMAP rights of an API LPS session are the webmail's rights on the BAL (mailboxes.access):
one ACL group per grant, and the LPS part of Dovecot's configuration only when a port is set."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import User
from mailboxes.access import grant_for, login_grant
from mailboxes.console.services.lifecycle import mailbox_suspend
from mailboxes.models import Mailbox, MailboxAccess
from mailboxes.software.sessions import imap_group
from mailboxes.store import dovecot_lps
from tests.factories import grant, make_mailbox, make_professional, make_structure

pytestmark = pytest.mark.django_db


def test_each_grant_gives_its_acl_group(settings) -> None:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    reader, organiser, manager = (make_professional(first_name=n) for n in ("A", "B", "C"))
    grant(box, reader)
    grant(box, organiser, can_organise=True)
    team = make_mailbox(structure=box.structure, kind="ORG", local_part="soins", responsible=doctor)
    grant(team, manager, can_organise=True, can_manage=True)

    def group(user: User, on: Mailbox = box) -> str:
        found = grant_for(user, on)
        assert found is not None
        return imap_group(found)

    assert group(doctor) == ""  # every right, as the Dovecot default for the BAL's owner
    assert group(reader) == "lps-lr"
    assert group(organiser) == "lps-lrswite"
    assert group(manager, team) == "lps-lrwstipekxa"


def test_a_suspended_bal_is_read_only_even_for_its_holder() -> None:
    doctor = make_professional()
    box = make_mailbox(structure=make_structure(), owner=doctor)
    mailbox_suspend(mailbox=box, actor=None)
    found = grant_for(doctor, box)
    assert found is not None and imap_group(found) == "lps-lr"


def test_a_login_reads_the_webmails_rights_in_one_query(django_assert_num_queries) -> None:
    """``login_grant`` (every software login) and ``grant_for`` (the webmail) give the same
    grant for every person and BAL: holder, member, delegate, lapsed delegation, the PER BAL
    of a holder who never signed in, a suspended and a closed BAL, a deactivated account."""
    structure = make_structure()
    doctor = make_professional()
    box = make_mailbox(structure=structure, owner=doctor)
    invited = make_professional(first_name="Jean")
    unsigned = make_mailbox(structure=structure, local_part="jean.dupont", owner=invited)
    team = make_mailbox(structure=structure, kind="ORG", local_part="soins", responsible=doctor)
    paused = make_mailbox(structure=structure, kind="ORG", local_part="accueil", responsible=doctor)
    closed = make_mailbox(structure=structure, kind="ORG", local_part="ancien", responsible=doctor)
    reader, organiser, lapsed, manager, stranger, gone = (
        make_professional(first_name=n) for n in ("A", "B", "C", "D", "E", "F")
    )
    grant(box, reader)
    grant(box, organiser, can_organise=True, can_send=True)
    grant(box, lapsed, can_send=True)
    MailboxAccess.objects.filter(user=lapsed).update(expires_at=timezone.now() - timedelta(1))
    grant(box, gone)
    grant(unsigned, reader)
    User.objects.filter(pk=invited.pk).update(psc_refreshed_at=None)  # as a director created it
    for team_box in (team, paused, closed):
        grant(team_box, manager, can_organise=True, can_manage=True)
    grant(paused, reader)
    mailbox_suspend(mailbox=paused, actor=None)
    Mailbox.objects.filter(pk=closed.pk).update(status=Mailbox.Status.CLOSED)
    User.objects.filter(pk=gone.pk).update(is_active=False)
    gone.refresh_from_db()

    people = [doctor, invited, reader, organiser, lapsed, manager, stranger, gone]
    relations = []
    for person in people:
        for mailbox in (box, unsigned, team, paused, closed):
            expected = grant_for(person, mailbox) if person.is_active else None
            with django_assert_num_queries(1):
                user, found_box, found = login_grant(person.national_id or "", mailbox.address)
                assert found_box is not None and found_box.structure == structure
            assert (user, found_box, found) == (person if person.is_active else None, mailbox,
                                                expected), (person, mailbox)  # fmt: skip
            relations.append(found.relation if found else None)
    # The walk met each kind of grant, and refusals.
    assert {"owner", "delegate", "member", None} <= set(relations)
    assert login_grant("899700999999", box.address) == (None, box, None)
    assert login_grant(doctor.national_id or "", "personne@ailleurs.fr") == (doctor, None, None)


def test_no_lps_configuration_while_no_port_is_set(settings, tmp_path: Path) -> None:
    settings.LPS_IMAP_PORT = settings.LPS_IMAPS_PORT = ""
    assert dovecot_lps.section(tmp_path) == ""
    settings.LPS_IMAP_PORT = "10143"
    text = dovecot_lps.section(tmp_path)
    assert "ssl_min_protocol = TLSv1.2" in text and "mechanisms = xoauth2 oauthbearer" in text


def test_dovecot_asks_the_portal_through_a_lua_passdb_that_holds_no_secret(
    settings, tmp_path: Path
) -> None:
    """A long-lived Lua passdb (no process per login); the secret stays in its own file."""
    settings.LPS_IMAP_PORT = "10143"
    settings.LPS_AUTH_URL = "http://127.0.0.1:8000/logiciels/dovecot/auth"
    settings.LPS_AUTH_SECRET = "secret-de-test-lps"
    written: dict[str, str] = {}
    dovecot_lps.write_files(
        tmp_path, lambda path, content, *_: written.__setitem__(path.name, content), 0
    )

    section = dovecot_lps.section(tmp_path)
    assert "driver = lua" in section and "checkpassword" not in section
    assert f"file={tmp_path}/lps-auth.lua blocking=yes" in section
    script = written["lps-auth.lua"]
    assert settings.LPS_AUTH_URL in script and str(tmp_path / "lps-auth.header") in script
    assert "secret-de-test-lps" not in script
    assert written["lps-auth.header"] == "X-LPS-Secret: secret-de-test-lps\n"


def test_a_url_that_would_break_the_lua_script_is_refused(settings, tmp_path: Path) -> None:
    settings.LPS_IMAP_PORT = "10143"
    settings.LPS_AUTH_URL = 'http://127.0.0.1:8000/x" .. os.execute("id") .. "'
    with pytest.raises(ValueError):
        dovecot_lps.write_files(tmp_path, lambda *_: None, 0)
