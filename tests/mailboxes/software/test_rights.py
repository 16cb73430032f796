"""The IMAP rights of an API LPS session are the webmail's rights on the BAL (mailboxes.access):
one ACL group per grant, and the LPS part of Dovecot's configuration only when a port is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.models import User
from mailboxes.access import grant_for
from mailboxes.console.services.lifecycle import mailbox_suspend
from mailboxes.models import Mailbox
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


def test_no_lps_configuration_while_no_port_is_set(settings, tmp_path: Path) -> None:
    settings.LPS_IMAP_PORT = settings.LPS_IMAPS_PORT = ""
    assert dovecot_lps.section(tmp_path) == ""
    settings.LPS_IMAP_PORT = "10143"
    text = dovecot_lps.section(tmp_path)
    assert "ssl_min_protocol = TLSv1.2" in text and "mechanisms = xoauth2 oauthbearer" in text
