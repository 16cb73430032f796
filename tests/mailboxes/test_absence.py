"""Absence messages (RFC 3834 personal responder): which mail is answered, once per sender and
per period, within the dates, through the outbound queue with the right headers; the webmail
page that sets it, with its rights and traces."""

from __future__ import annotations

import email
import email.policy
from datetime import date, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.audit import Action
from accounts.models import AuditEvent, User
from mailboxes.access import access_mailbox
from mailboxes.models import Absence, AbsenceReply, Mailbox, OutboundDelivery, OutboundMessage
from mailboxes.tasks import send_absence_reply
from mailboxes.transport.absence import ABSENCE_TASK, absence_watch_reset, refusal
from mailboxes.transport.gateway.policy import deliver
from mailboxes.transport.relay import Recipient, message_relay, message_spool
from mailboxes.webmail.services.absence import absence_set
from tests.factories import grant, make_mailbox, make_message, make_professional, make_structure
from tests.mailboxes.conftest import inbox, wait_provisioned

pytestmark = pytest.mark.django_db

BAL = "claire.martin@ehpad-les-tilleuls.mssante.fr"
SENDER = "paul.durand@chu-exemple.mssante.fr"
TEXT = "Je suis absente jusqu'au 14. Pour une urgence, appelez le secrétariat."


@pytest.fixture(autouse=True)
def _fresh_watch() -> Any:
    absence_watch_reset()  # the per-process cache of watched BALs, between tests
    yield
    absence_watch_reset()


@pytest.fixture
def holder() -> User:
    return make_professional(first_name="Claire", last_name="Martin")


@pytest.fixture
def box(dovecot: Any, holder: User) -> Mailbox:
    bal = make_mailbox(
        structure=make_structure(), local_part="claire.martin", owner=holder,
        display_name="Dr Claire MARTIN",
    )  # fmt: skip
    wait_provisioned(bal.address)
    return bal


def _absent(box: Mailbox, holder: User, *, start: int = 0, end: int = 7) -> Absence:
    today = timezone.localdate()
    grant_ = access_mailbox(holder, box.public_id)
    absence = absence_set(
        grant=grant_,
        actor=holder,
        starts_on=today + timedelta(days=start),
        ends_on=today + timedelta(days=end),
        text=TEXT,
    )
    absence_watch_reset()  # on_commit does it in production; tests run in one transaction
    return absence


def _arrive(django_capture_on_commit_callbacks: Any, raw: bytes, mail_from: str = SENDER) -> int:
    """Deliver ``raw`` through the gateway's delivery step, then run the absence tasks it
    enqueued after commit, as the worker would. Returns how many were enqueued."""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        reply = deliver(mail_from, [BAL], raw)
    assert reply.startswith("250")
    tasks = [
        c.keywords["args"]
        for c in callbacks
        if getattr(c, "args", None) == (ABSENCE_TASK,)  # functools.partial(send_task, name)
    ]
    for args in tasks:
        send_absence_reply(*args)
    return len(tasks)


def _replies() -> list[OutboundMessage]:
    return list(OutboundMessage.objects.filter(origin=OutboundMessage.Origin.AUTOREPLY))


# Each class of mail RFC 3834 §2 forbids answering, with several members where it has them.
REFUSED = [
    ("null_sender", "", ""),
    ("null_sender", "<>", ""),
    ("auto_submitted", SENDER, "Auto-Submitted: auto-replied\r\n"),
    ("auto_submitted", SENDER, "Auto-Submitted: auto-generated\r\n"),
    ("auto_submitted", SENDER, "Auto-Submitted: auto-notified; owner-email=x@y.fr\r\n"),
    ("auto_submitted", SENDER, "Auto-Submitted: une-valeur-inconnue\r\n"),
    ("precedence", SENDER, "Precedence: bulk\r\n"),
    ("precedence", SENDER, "Precedence: list\r\n"),
    ("precedence", SENDER, "Precedence: JUNK\r\n"),
    ("suppressed", SENDER, "X-Auto-Response-Suppress: OOF\r\n"),
    ("suppressed", SENDER, "X-Auto-Response-Suppress: DR, RN, NRN, All\r\n"),
    ("list", SENDER, "List-Id: <soins.liste.chu-exemple.mssante.fr>\r\n"),
    ("list", SENDER, "List-Unsubscribe: <mailto:leave@chu-exemple.mssante.fr>\r\n"),
    ("list", SENDER, "List-Post: <mailto:soins@chu-exemple.mssante.fr>\r\n"),
    ("robot_address", "MAILER-DAEMON@chu-exemple.mssante.fr", ""),
    ("robot_address", "owner-soins@chu-exemple.mssante.fr", ""),
    ("robot_address", "soins-request@chu-exemple.mssante.fr", ""),
    ("robot_address", "listserv@chu-exemple.mssante.fr", ""),
    ("report", SENDER, "Content-Type: multipart/report; report-type=delivery-status\r\n"),
    ("report", SENDER, "Content-Type: multipart/report; report-type=disposition-notification\r\n"),
    ("patient", "279035121518989@patient.mssante.fr", ""),
    ("patient", "279035121518989@PATIENT.MSSANTE.FR", ""),
    ("self", BAL, ""),
    ("self", BAL.upper(), ""),
]


def _raw(*, extra: str = "", to: str = BAL, cc: str = "", sender_header: str = "") -> bytes:
    headers = extra + (f"Cc: {cc}\r\n" if cc else "")
    raw = make_message(
        to=to, extra_headers=headers, sender=sender_header or f"Dr Paul Durand <{SENDER}>"
    )
    if "Content-Type: multipart/report" in extra:
        # the single-part Content-Type of make_message would come first: keep only ours
        raw = raw.replace(b"Content-Type: text/plain; charset=utf-8\r\n", b"", 1)
    return raw


class TestRefusals:
    """RFC 3834 §2 and our own rule (no patient): no reply, and nothing queued."""

    @pytest.mark.parametrize(("reason", "mail_from", "extra"), REFUSED)
    def test_the_rule_names_the_reason(self, reason: str, mail_from: str, extra: str) -> None:
        headers = email.message_from_bytes(_raw(extra=extra), policy=email.policy.compat32)
        assert refusal(bal=BAL, mail_from=mail_from, headers=headers) == reason

    @pytest.mark.parametrize(
        ("to", "cc"),
        [
            ("Équipe <soins@ehpad-les-tilleuls.mssante.fr>", ""),  # an alias that reached us
            ("undisclosed-recipients:;", ""),  # we were in Bcc
            ("autre@ehpad-les-tilleuls.mssante.fr", "encore@chu-exemple.mssante.fr"),
        ],
    )
    def test_mail_not_explicitly_addressed_to_the_bal_is_not_answered(
        self, to: str, cc: str
    ) -> None:
        headers = email.message_from_bytes(_raw(to=to, cc=cc), policy=email.policy.compat32)
        assert refusal(bal=BAL, mail_from=SENDER, headers=headers) == "not_addressed"

    def test_a_patient_in_from_is_not_answered_whatever_the_envelope(self) -> None:
        raw = _raw(sender_header="Mme Leroy <279035121518989@patient.mssante.fr>")
        headers = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert refusal(bal=BAL, mail_from=SENDER, headers=headers) == "patient"

    @pytest.mark.parametrize(
        "raw",
        [
            _raw(),
            _raw(to="Autre <autre@chu-exemple.mssante.fr>", cc=f"Claire <{BAL.upper()}>"),
            _raw(extra="Auto-Submitted: no\r\n"),
            _raw(extra="Precedence: first-class\r\n"),
            _raw(extra="X-Auto-Response-Suppress: DR, RN\r\n"),
            _raw(to="secretariat@chu-exemple.mssante.fr", extra=f"Resent-To: {BAL}\r\n"),
        ],
    )
    def test_ordinary_mail_to_the_bal_may_be_answered(self, raw: bytes) -> None:
        headers = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert refusal(bal=BAL, mail_from=SENDER, headers=headers) is None

    @pytest.mark.parametrize(("reason", "mail_from", "extra"), REFUSED)
    def test_through_the_gateway_nothing_is_queued(
        self,
        box: Mailbox,
        holder: User,
        django_capture_on_commit_callbacks: Any,
        reason: str,
        mail_from: str,
        extra: str,
    ) -> None:
        _absent(box, holder)
        if reason == "self":  # the gateway only sees foreign senders; the relay sees ours
            mail_from = BAL
        assert _arrive(django_capture_on_commit_callbacks, _raw(extra=extra), mail_from) == 0
        assert _replies() == []
        assert not AbsenceReply.objects.exists()


def test_the_reply_is_in_the_outbound_queue_with_rfc_3834_headers(
    box: Mailbox, holder: User, django_capture_on_commit_callbacks: Any
) -> None:
    _absent(box, holder)
    raw = make_message(
        subject="Résultats de Mme Leroy",
        extra_headers="References: <fil.1@chu-exemple.mssante.fr>\r\n",
    )
    original_id = email.message_from_bytes(raw)["Message-ID"]
    assert _arrive(django_capture_on_commit_callbacks, raw) == 1

    [spooled] = _replies()
    assert spooled.envelope_from == ""  # the null return path (RFC 3834 §3.3)
    assert spooled.mailbox == box
    [row] = OutboundDelivery.objects.filter(message=spooled)
    assert (row.recipient, row.status) == (SENDER, OutboundDelivery.Status.QUEUED)
    reply = email.message_from_bytes(bytes(spooled.content), policy=email.policy.default)
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Subject"] == "Absence : Résultats de Mme Leroy"
    assert reply["In-Reply-To"] == original_id
    assert reply["References"] == f"<fil.1@chu-exemple.mssante.fr> {original_id}"
    assert reply["From"].addresses[0].addr_spec == BAL
    assert reply["From"].addresses[0].display_name == "Dr Claire MARTIN"
    assert reply["To"] == SENDER
    assert reply["X-MSS-NIL"]
    part = reply.get_body()
    assert part is not None
    body = part.get_content()
    assert TEXT in body
    assert "il n'a été transféré à personne" in body
    assert "Leroy" not in body  # nothing of the original but its subject goes back
    assert AuditEvent.objects.filter(action=Action.ABSENCE_REPLIED).count() == 1


def test_once_per_sender_per_period(
    box: Mailbox, holder: User, django_capture_on_commit_callbacks: Any
) -> None:
    _absent(box, holder)
    _arrive(django_capture_on_commit_callbacks, make_message(subject="Premier"))
    _arrive(django_capture_on_commit_callbacks, make_message(subject="Deuxième"))
    assert [m.deliveries.get().recipient for m in _replies()] == [SENDER]

    other = "jeanne.roux@chu-exemple.mssante.fr"
    _arrive(django_capture_on_commit_callbacks, make_message(subject="Autre"), other)
    assert sorted(m.deliveries.get().recipient for m in _replies()) == [other, SENDER]

    # A new absence (another period) answers the same sender again, once.
    Absence.objects.all().delete()
    _absent(box, holder, start=0, end=3)
    Absence.objects.filter(mailbox=box).update(starts_on=timezone.localdate() - timedelta(days=1))
    _arrive(django_capture_on_commit_callbacks, make_message(subject="Troisième"))
    _arrive(django_capture_on_commit_callbacks, make_message(subject="Quatrième"))
    assert sorted(m.deliveries.get().recipient for m in _replies()) == [other, SENDER, SENDER]


def test_the_task_run_twice_sends_once(box: Mailbox, holder: User) -> None:
    _absent(box, holder)
    facts = {"message_id": "<a.1@chu-exemple.mssante.fr>", "subject": "RDV", "references": ""}
    assert send_absence_reply(BAL, SENDER, facts) is True
    assert send_absence_reply(BAL, SENDER.upper(), facts) is False
    assert len(_replies()) == 1


@pytest.mark.parametrize(("start", "end"), [(1, 5), (-5, -1)], ids=["before-start", "after-end"])
def test_outside_its_dates_the_absence_is_silent(
    box: Mailbox, holder: User, django_capture_on_commit_callbacks: Any, start: int, end: int
) -> None:
    today = timezone.localdate()
    Absence.objects.create(
        mailbox=box,
        starts_on=today + timedelta(days=start),
        ends_on=today + timedelta(days=end),
        text=TEXT,
    )
    absence_watch_reset()
    assert _arrive(django_capture_on_commit_callbacks, make_message()) == 0
    facts = {"message_id": "", "subject": "RDV", "references": ""}
    assert send_absence_reply(BAL, SENDER, facts) is False  # a task queued the day before
    assert _replies() == []


def test_the_last_day_is_included(
    box: Mailbox, holder: User, django_capture_on_commit_callbacks: Any
) -> None:
    _absent(box, holder, start=-3, end=0)
    assert _arrive(django_capture_on_commit_callbacks, make_message()) == 1
    assert len(_replies()) == 1


# The webmail page


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_setting_and_stopping_the_absence_is_traced(box: Mailbox, holder: User) -> None:
    client = _client(holder)
    url = reverse("mailboxes:absence", args=[box.public_id])
    today = timezone.localdate()
    end = today + timedelta(days=10)
    response = client.post(
        url, {"debut": today.isoformat(), "fin": end.isoformat(), "texte": TEXT}, follow=True
    )
    assert "Message d'absence actif du" in response.content.decode()
    absence = Absence.objects.get(mailbox=box)
    assert (absence.starts_on, absence.ends_on, absence.text, absence.set_by) == (
        today, end, TEXT, holder,
    )  # fmt: skip
    response = client.post(url, {"action": "arreter"}, follow=True)
    assert "Aucun message d'absence." in response.content.decode()
    assert not Absence.objects.filter(mailbox=box).exists()
    actions = list(
        AuditEvent.objects.filter(target_id=str(box.public_id))
        .filter(action__startswith="mailbox.absence")
        .order_by("occurred_at")
        .values_list("action", flat=True)
    )
    assert actions == [Action.ABSENCE_SET, Action.ABSENCE_CLEARED]


@pytest.mark.parametrize(
    ("start", "end", "error"),
    [
        (3, 1, "La date de fin précède la date de début."),
        (-9, -2, "La date de fin est déjà passée."),
        (0, 400, "Une absence dure au plus un an."),
    ],
)
def test_wrong_dates_get_a_french_error(
    box: Mailbox, holder: User, start: int, end: int, error: str
) -> None:
    today: date = timezone.localdate()
    response = _client(holder).post(
        reverse("mailboxes:absence", args=[box.public_id]),
        {
            "debut": (today + timedelta(days=start)).isoformat(),
            "fin": (today + timedelta(days=end)).isoformat(),
            "texte": TEXT,
        },
    )
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Absence.objects.exists()


def test_a_reader_without_the_send_right_cannot_set_it(box: Mailbox) -> None:
    reader = make_professional(first_name="Léa", last_name="Petit")
    grant(box, reader)
    url = reverse("mailboxes:absence", args=[box.public_id])
    today = timezone.localdate().isoformat()
    response = _client(reader).post(url, {"debut": today, "fin": today, "texte": TEXT})
    assert response.status_code == 403
    assert "pas écrire en son nom" in response.content.decode()
    assert not Absence.objects.exists()


def test_a_delegate_with_the_send_right_sets_it_for_the_holder(box: Mailbox) -> None:
    secretary = make_professional(first_name="Inès", last_name="Garcia")
    grant(box, secretary, can_send=True)
    today = timezone.localdate().isoformat()
    _client(secretary).post(
        reverse("mailboxes:absence", args=[box.public_id]),
        {"debut": today, "fin": today, "texte": TEXT},
    )
    assert Absence.objects.get(mailbox=box).set_by == secretary


def test_between_two_of_our_bals_absent_colleagues_do_not_answer_each_other(
    box: Mailbox, holder: User, django_capture_on_commit_callbacks: Any
) -> None:
    """The relay's local delivery answers like the gateway; the reply, delivered locally to
    a colleague who is away too, is not answered back (Auto-Submitted, null sender)."""
    colleague = make_professional(first_name="Marc", last_name="Blanc")
    other = make_mailbox(structure=box.structure, local_part="marc.blanc", owner=colleague)
    wait_provisioned(other.address)
    _absent(box, holder)
    _absent(other, colleague)

    def relay(message: OutboundMessage) -> list[list[Any]]:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            message_relay(public_id=str(message.public_id))
        return [
            c.keywords["args"] for c in callbacks if getattr(c, "args", None) == (ABSENCE_TASK,)
        ]

    sent = message_spool(
        origin=OutboundMessage.Origin.WEBMAIL,
        envelope_from=other.address,
        recipients=[Recipient(BAL)],
        content=make_message(sender=other.address, subject="Garde de samedi"),
        mailbox=other,
    )
    [task] = relay(sent)
    assert send_absence_reply(*task) is True
    [reply] = _replies()
    assert reply.deliveries.get().local  # one of ours: over LMTP, no remote operator
    assert relay(reply) == []  # delivered to the colleague, who does not answer it
    assert OutboundDelivery.objects.get(message=reply).status == OutboundDelivery.Status.DELIVERED
    assert len(_replies()) == 1
    [copy] = inbox(other.address)
    assert b"Subject: Absence : Garde de samedi" in copy
