"""The named personas of the suite (STYLE.md, issue 16), in one place: every test about who
may do what starts from the same people, and their rights are granted through the service
production uses (``mailboxes.console.services.people.access_set``, via ``factories.grant``).

- the doctor, Dr Claire Martin, holds the personal BAL ``per``;
- the secretary, Sophie Petit, has a read-only delegation on it;
- the nurse, Julien Bernard, is a member of the team BAL ``soins`` with send rights (and
  organises it, as a team member does);
- the director, Marc Lefebvre, directs the structure and answers for ``soins``, with no right
  on any BAL's mail;
- the outsider, Olivier Dehors, works in another structure: every page here is a 404 to him;
- the operator is the break-glass account (no national id): the Django admin only.

Building the cast provisions its BALs in Dovecot: tests use it with the ``dovecot`` fixture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.test import Client

from accounts.decorators import AUTH_AT_SESSION_KEY
from accounts.models import Membership, Structure, User
from mailboxes.models import Mailbox, MailboxAccess
from tests.factories import grant, make_mailbox, make_membership, make_professional, make_structure


@dataclass
class Cast:
    structure: Structure
    elsewhere: Structure  # the outsider's structure
    doctor: User
    secretary: User
    nurse: User
    director: User
    outsider: User
    operator: User
    per: Mailbox  # the doctor's personal BAL
    soins: Mailbox  # the care team's BAL
    delegation: MailboxAccess  # the secretary on ``per``: read only
    membership: MailboxAccess  # the nurse on ``soins``: read, organise, send

    def people(self) -> dict[str, User]:
        """The professionals by persona name (the operator is not one)."""
        return {
            "doctor": self.doctor,
            "secretary": self.secretary,
            "nurse": self.nurse,
            "director": self.director,
            "outsider": self.outsider,
        }


def make_cast() -> Cast:
    structure = make_structure()
    elsewhere = make_structure(
        name="IME Les Coquelicots", finess="690002001", domain="ime-les-coquelicots.mssante.fr"
    )
    doctor = make_professional(first_name="Claire", last_name="Martin")
    doctor.civility = "DR"
    doctor.save(update_fields=["civility"])
    secretary = make_professional(first_name="Sophie", last_name="Petit", profession="")
    nurse = make_professional(first_name="Julien", last_name="Bernard", profession="60")
    director = make_professional(first_name="Marc", last_name="Lefebvre", profession="")
    outsider = make_professional(first_name="Olivier", last_name="Dehors")
    operator = User.objects.create_superuser("operateur", password="break-glass-0")
    make_membership(director, structure, Membership.Role.DIRECTOR)
    for person in (doctor, secretary, nurse):
        make_membership(person, structure)
    make_membership(outsider, elsewhere)
    per = make_mailbox(
        structure=structure, owner=doctor, local_part="claire.martin",
        display_name="Dr Claire Martin",
    )  # fmt: skip
    soins = make_mailbox(
        structure=structure, kind="ORG", local_part="soins", responsible=director,
        display_name="Équipe soins",
    )  # fmt: skip
    delegation = grant(per, secretary)
    membership = grant(soins, nurse, can_organise=True, can_send=True)
    return Cast(
        structure, elsewhere, doctor, secretary, nurse, director, outsider, operator, per,
        soins, delegation, membership,
    )  # fmt: skip


def client_for(user: User, *, recent: bool = True) -> Client:
    """A browser session as after a Pro Santé Connect sign-in: just now (``recent``), or an
    hour ago (the console's sensitive actions then ask to sign in again)."""
    client = Client()
    client.force_login(user)
    session = client.session
    session[AUTH_AT_SESSION_KEY] = int(time.time()) - (0 if recent else 3600)
    session.save()
    return client
