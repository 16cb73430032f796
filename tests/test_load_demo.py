"""`make run` runs `load_demo` at every start: what people did in the demo stays as they left
it, the run never fails because of it, and no BAL appears that nobody asked for."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from accounts.models import Membership, Structure, User
from devtools.demo.data import DELEGATIONS
from mailboxes.console.services.lifecycle import mailbox_suspend
from mailboxes.console.services.people import access_revoke, professional_invite
from mailboxes.models import Mailbox, MailboxAccess

pytestmark = pytest.mark.django_db

EHPAD = "690001235"
DIRECTOR = "899700120068"


def test_a_second_run_after_console_actions_changes_nothing_and_creates_no_bal() -> None:
    call_command("load_demo")
    ehpad = Structure.objects.get(identifier=EHPAD)
    director = User.objects.get(national_id=DIRECTOR)
    boxes = set(Mailbox.objects.values_list("address", flat=True))

    # What a director and a holder do in the demo: a team BAL closed (its rights go with it,
    # as mailbox_close_now leaves it), the APP BAL suspended, a delegation taken back, a
    # professional invited.
    team = Mailbox.objects.get(structure=ehpad, local_part="secretariat")
    MailboxAccess.objects.filter(mailbox=team).delete()
    Mailbox.objects.filter(pk=team.pk).update(status=Mailbox.Status.CLOSED)
    mailbox_suspend(mailbox=Mailbox.objects.get(structure=ehpad, kind="APP"), actor=director)
    owner_id, delegate_id = DELEGATIONS[0]
    delegation = MailboxAccess.objects.get(
        mailbox__owner__national_id=owner_id, user__national_id=delegate_id
    )
    holder = delegation.mailbox.owner
    assert holder is not None
    access_revoke(access=delegation, actor=holder)
    invited = professional_invite(structure=ehpad, national_id="810009876540", actor=director)

    call_command("load_demo")  # the next `make run`

    assert set(Mailbox.objects.values_list("address", flat=True)) == boxes
    assert Mailbox.objects.get(pk=team.pk).status == Mailbox.Status.CLOSED
    assert not MailboxAccess.objects.filter(mailbox=team).exists()
    assert Mailbox.objects.get(structure=ehpad, kind="APP").status == Mailbox.Status.SUSPENDED
    assert not MailboxAccess.objects.filter(
        mailbox__owner__national_id=owner_id, user__national_id=delegate_id
    ).exists()
    assert not Mailbox.objects.filter(owner=invited.user).exists()
    assert Membership.objects.filter(structure=ehpad, user=invited.user).exists()


def test_a_demoted_director_stays_demoted() -> None:
    call_command("load_demo")
    ehpad = Structure.objects.get(identifier=EHPAD)
    nurse = Membership.objects.filter(structure=ehpad).exclude(user__national_id=DIRECTOR)[0]
    # A second director is named, then the first one steps down.
    Membership.objects.filter(pk=nurse.pk).update(role=Membership.Role.DIRECTOR)
    Membership.objects.filter(structure=ehpad, user__national_id=DIRECTOR).update(
        role=Membership.Role.MEMBER
    )
    call_command("load_demo")
    assert Membership.objects.get(structure=ehpad, user__national_id=DIRECTOR).role == "member"
