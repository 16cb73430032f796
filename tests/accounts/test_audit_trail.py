"""The audit trail holds against an insider: one vocabulary that the writer enforces, rows
the database refuses to change or delete (except through the retention purge), and the
client address taken from the trusted proxy hop only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory
from django.utils import timezone

from accounts.audit import Action, TargetType, UnknownAuditVocabulary, audit_event, audit_record
from accounts.models import AuditEvent, Structure
from accounts.services import audit_purge
from tests.factories import make_professional, make_structure

pytestmark = pytest.mark.django_db

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the append-only trigger is PostgreSQL's"
)


def _old(days: int, **fields: object) -> AuditEvent:
    event = audit_event(action=Action.MESSAGE_READ, actor_label="test", **fields)  # type: ignore[arg-type]
    event.occurred_at = timezone.now() - timedelta(days=days)
    event.save(force_insert=True)
    return event


# --- One vocabulary ----------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["message.lu", "Message.read", "", "auth.login "])
def test_the_writer_refuses_an_action_outside_the_vocabulary(action: str) -> None:
    with pytest.raises(UnknownAuditVocabulary):
        audit_record(action=action, actor_label="test")
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("target_type", ["mailbox", "Message", "mailboxes.Mailbox", "bal"])
def test_the_writer_refuses_a_target_type_outside_the_vocabulary(target_type: str) -> None:
    with pytest.raises(UnknownAuditVocabulary):
        audit_record(action=Action.BAL_PUBLISHED, target_type=target_type, target_id="x")
    assert not AuditEvent.objects.exists()


def test_a_model_target_outside_the_vocabulary_is_refused_too() -> None:
    doctor = make_professional()
    from mailboxes.models import Mailbox  # any model the vocabulary does not name

    structure = make_structure()
    box = Mailbox.objects.create(
        structure=structure,
        domain=structure.domains.get(),
        local_part="x",
        address="x@ehpad-les-tilleuls.mssante.fr",
        kind="PER",
        owner=doctor,
    )
    assert (
        audit_record(action=Action.MAILBOX_UPDATED, target=box).target_type == "mailboxes.mailbox"
    )
    with pytest.raises(UnknownAuditVocabulary):
        audit_record(action=Action.MEMBERSHIP_ADDED, target=box.domain)


def test_members_and_their_text_are_the_same_action() -> None:
    by_member = audit_record(action=Action.LOGIN, target_type=TargetType.USER, target_id="1")
    by_text = audit_record(action="auth.login", target_type="accounts.user", target_id="1")
    assert (by_member.action, by_member.target_type) == (by_text.action, by_text.target_type)
    assert by_member.action == "auth.login"


# --- Append-only in the database ----------------------------------------------------------------


@needs_postgresql
def test_an_update_through_the_orm_is_refused_by_the_database() -> None:
    event = audit_record(action=Action.MESSAGE_READ, actor_label="Claire", details={"uid": 1})

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(actor_label="quelqu'un d'autre")
    event.details = {"uid": 2}
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(
            occurred_at=timezone.now() - timedelta(days=400)
        )

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.actor_label, stored.details) == ("Claire", {"uid": 1})


@needs_postgresql
def test_a_delete_through_the_orm_or_sql_is_refused_even_for_old_traces() -> None:
    recent = audit_record(action=Action.MESSAGE_READ, actor_label="Claire")
    old = _old(400)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=recent.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        old.delete()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM accounts_auditevent")

    assert AuditEvent.objects.filter(pk__in=[recent.pk, old.pk]).count() == 2


@needs_postgresql
def test_the_purge_goes_through_the_database_function_and_only_for_old_traces() -> None:
    old = [_old(days) for days in (200, 300)]
    kept = _old(10)

    assert audit_purge(older_than_days=183) == 2

    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in old]).exists()
    assert AuditEvent.objects.filter(pk=kept.pk).exists()
    assert AuditEvent.objects.filter(action=Action.AUDIT_PURGED).count() == 1
    # The function itself refuses to erase the last day, whatever it is asked.
    with (
        pytest.raises(DatabaseError, match="younger than one day"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT accounts_audit_purge(now(), 100)")
    with pytest.raises(ValueError):
        audit_purge(older_than_days=0)
    assert AuditEvent.objects.filter(pk=kept.pk).exists()


def test_deleting_a_person_keeps_their_traces_under_their_label() -> None:
    doctor = make_professional(national_id="810001234567")
    structure = make_structure()
    event = audit_record(action=Action.LOGIN, actor=doctor, target=doctor, structure=structure)

    doctor.delete()
    Structure.objects.filter(pk=structure.pk).delete()

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.actor_id is None and stored.structure_id is None
    assert stored.actor_label == "810001234567" and stored.action == "auth.login"


# --- The client address -------------------------------------------------------------------------


def _ip(settings, trusted: list[str], remote: str, forwarded: str | None) -> str | None:
    import ipaddress

    settings.TRUSTED_PROXIES = [ipaddress.ip_network(n) for n in trusted]
    request = RequestFactory().get("/", REMOTE_ADDR=remote)
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return audit_record(action=Action.LOGOUT, request=request).ip_address


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_claims(settings) -> None:
    assert _ip(settings, [], "203.0.113.7", "198.51.100.1") == "203.0.113.7"


def test_behind_a_trusted_proxy_the_hop_it_saw_is_the_client(settings) -> None:
    assert _ip(settings, ["10.0.0.0/8"], "10.0.0.2", "198.51.100.1") == "198.51.100.1"
    # Several proxies: the nearest untrusted hop, never what the client wrote at the left.
    assert (
        _ip(settings, ["10.0.0.0/8"], "10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.9")
        == "198.51.100.1"
    )


def test_a_client_cannot_choose_its_address_through_an_untrusted_peer(settings) -> None:
    assert _ip(settings, ["10.0.0.0/8"], "203.0.113.7", "10.0.0.5") == "203.0.113.7"


def test_a_malformed_hop_stops_the_walk_at_the_last_valid_address(settings) -> None:
    assert _ip(settings, ["10.0.0.0/8"], "10.0.0.2", "<script>") == "10.0.0.2"
    assert _ip(settings, ["10.0.0.0/8"], "10.0.0.2", "") == "10.0.0.2"
    assert _ip(settings, ["2001:db8::/32"], "2001:db8::1", "2001:db8::2, ::ffff:c633:6401") in {
        "::ffff:c633:6401",
        "::ffff:198.51.100.1",
    }


# --- Several traces at once --------------------------------------------------------------------


def test_traces_written_together_are_the_rows_written_one_by_one() -> None:
    """audit_record_many (a COPY on PostgreSQL) stores each trace exactly as audit_record
    would: actor, structure, client address, JSON details with accents, nesting and quotes."""
    from accounts.audit import audit_record_many

    person = make_professional()
    structure = make_structure()
    kinds = [
        {"actor": person, "ip": "2001:db8::7", "details": {"to": ["a@b.fr"], "n": 3}},
        {"actor_label": "relais", "structure": structure, "details": {"raison": "« reçu »\t\\"}},
        {"actor_label": 'CN=Éditeur,O="X"', "success": False, "error_code": "550"},
    ]

    def built(tag: str) -> list[AuditEvent]:
        return [
            audit_event(
                action=Action.RELAY_DELIVERED,
                target_type=TargetType.MESSAGE,
                target_id=f"<{tag}{i}@x>",
                **kind,  # type: ignore[arg-type]
            )
            for i, kind in enumerate(kinds)
        ]

    together, alone = built("many"), built("one")
    audit_record_many(together)
    for event in alone:
        event.save(force_insert=True)

    def stored(tag: str) -> list[list[object]]:
        rows = AuditEvent.objects.filter(target_id__startswith=f"<{tag}").order_by("target_id")
        return [
            [
                r.actor_id,
                r.actor_label,
                r.action,
                r.target_type,
                r.target_id[len(tag) + 1 :],
                r.structure_id,
                r.result,
                r.error_code,
                r.ip_address,
                r.details,
            ]
            for r in rows
        ]

    assert stored("many") == stored("one")
    assert len(stored("many")) == 3
    first = AuditEvent.objects.get(target_id="<many0@x>")
    assert first.public_id == together[0].public_id
    assert first.occurred_at == together[0].occurred_at
    assert first.ip_address == "2001:db8::7"
