"""A probe asks "is anything waiting?" many times a second, on tables whose statistics lag
behind a burst. Each must read the head of its own index: rows read and thrown away are what
a hanging endpoint's backlog cost every other endpoint (bench/isolation.py). Runs on SQLite
and, in the integration run, on PostgreSQL (``portable``), where the plan is run and counted.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.factories import ArticleFactory, WebhookFactory
from webhooks_app import claims, sql
from webhooks_app.events import new_delivery
from webhooks_app.models import Delivery, DeliveryStatus, Event, HeldFanout, Lane

pytestmark = [pytest.mark.django_db, pytest.mark.portable]

BACKLOG = 2000
HISTORY = 5000
# About an event's size in the bench: the table's pages are what the planner weighs.
BODY = '{"data": "' + "x" * 800 + '"}'


# One row per held webhook (holds.py): read whole, which is the right plan for it.
SMALL_TABLES = {HeldFanout._meta.db_table}


def plan_of(statement: str, params: list[Any]) -> dict[str, Any]:
    """What running ``statement`` read: on PostgreSQL the rows its scans threw away and
    the relations it scanned whole (but the holds); on SQLite (which plans but does not
    count) the scans."""
    plan = _plan_of(statement, params)
    plan["whole_scans"] = [table for table in plan["whole_scans"] if table not in SMALL_TABLES]
    return plan


def _plan_of(statement: str, params: list[Any]) -> dict[str, Any]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params)
            raw = cursor.fetchone()[0]
            nodes = list(_nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]))
            return {
                "thrown_away": sum(
                    node.get("Rows Removed by Filter", 0)
                    + node.get("Rows Removed by Index Recheck", 0)
                    for node in nodes
                ),
                "whole_scans": [
                    node["Relation Name"] for node in nodes if node["Node Type"] == "Seq Scan"
                ],
                "indexes": {node["Index Name"] for node in nodes if "Index Name" in node},
            }
        cursor.execute(f"EXPLAIN QUERY PLAN {statement}", params)
        details = [str(row[-1]) for row in cursor.fetchall()]
        indexes = {
            match.group(1)
            for detail in details
            if (match := re.search(r"USING (?:[A-Z]+ )*INDEX (\S+)", detail))
        }
        return {
            "thrown_away": None,
            # "SCAN t USING INDEX i" reads all of i: a whole scan unless i is partial.
            "whole_scans": [
                d.split()[1] for d in details if d.startswith("SCAN webhooks") and "INDEX" not in d
            ],
            "indexes": indexes,
        }


def _nodes(plan: dict[str, Any]) -> Any:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


@pytest.fixture
def hanging_backlog():
    """Two fast endpoints with nothing due, beside a hanging one with BACKLOG due rows
    (older than anything else), HISTORY events, every one fanned out: what each probe sees
    during bench/isolation.py."""
    fast, other, hanging = WebhookFactory(), WebhookFactory(), WebhookFactory()
    ArticleFactory.create_batch(3)
    with transaction.atomic():
        claims.fan_out(timezone.now(), limit=3, using="default")
    Delivery.objects.filter(webhook__in=[fast, other]).update(
        status=DeliveryStatus.SUCCEEDED, next_attempt_at=None
    )
    # Tables of the bench's size, written at once: the backlog, and events fanned out
    # long ago. (A table of a few pages is best read whole, and PostgreSQL does.)
    event = Event.objects.first()
    long_ago = timezone.now() - datetime.timedelta(hours=1)
    Event.objects.bulk_create(
        Event(
            name="create",
            model="tests.article",
            body=BODY,
            created_at=long_ago,
            fanout_batch=1 + number // 200,
        )
        for number in range(HISTORY)
    )
    Delivery.objects.bulk_create(
        new_delivery(event, hanging, due_at=long_ago) for _ in range(BACKLOG)
    )
    return fast, other, hanging


@pytest.mark.parametrize("idle", [1, 2], ids=["one-webhook", "two-webhooks"])
def test_a_probe_of_idle_webhooks_reads_nothing_of_a_hanging_ones_backlog(hanging_backlog, idle):
    fast, other, hanging = hanging_backlog
    probed = {webhook.pk: 100 for webhook in [fast, other][:idle]}
    # Held itself (its events wait as events): the holds' probe passes it by too.
    HeldFanout.objects.create(webhook=hanging, from_batch=1)
    now = timezone.now()
    assert not sql.work_waiting("default", now, probed).work
    assert sql.work_waiting("default", now, {**probed, hanging.pk: 100}).work

    plan = plan_of(*sql.work_waiting_statement("default", now, probed))

    assert plan["whole_scans"] == []
    assert "webhooks_delivery_queue_idx" in plan["indexes"]
    assert "webhooks_event_fanout_idx" in plan["indexes"]
    if plan["thrown_away"] is not None:
        assert plan["thrown_away"] == 0


def test_a_probe_of_every_webhook_stops_at_the_first_due_row(hanging_backlog):
    now = timezone.now()
    assert sql.work_waiting("default", now).work

    plan = plan_of(*sql.work_waiting_statement("default", now, None))

    assert plan["whole_scans"] == []
    assert "webhooks_delivery_due_idx" in plan["indexes"]
    if plan["thrown_away"] is not None:
        assert plan["thrown_away"] == 0


def _statement_of(call: Any) -> tuple[str, list[Any]]:
    """The first statement ``call`` sends through sql._execute."""
    sent: list[tuple[str, list[Any]]] = []
    original = sql._execute

    def capture(using: str, statement: str, params: Any) -> Any:
        sent.append((statement, list(params)))
        return original(using, statement, params)

    sql._execute = capture  # type: ignore[assignment]
    try:
        call()
    finally:
        sql._execute = original  # type: ignore[assignment]
    return sent[0]


def test_a_walk_of_the_due_rows_reads_the_due_index(hanging_backlog):
    fast, other, hanging = hanging_backlog
    rows: list[Any] = []
    statement = _statement_of(
        lambda: rows.extend(
            sql.due_rows(
                "default", timezone.now(), Lane.FIRST, 5, skip_webhooks=[fast.pk, other.pk]
            )
        )
    )
    assert [row[1] for row in rows] == [hanging.pk] * 5

    plan = plan_of(*statement)

    assert "webhooks_delivery_due_idx" in plan["indexes"]
    assert plan["whole_scans"] == []


def test_numbering_a_fan_out_reads_the_head_of_the_batch_index(hanging_backlog):
    assert sql.next_fanout_batch("default") == 1 + (HISTORY - 1) // 200 + 1

    plan = plan_of(sql._next_batch_sql("default"), [])

    assert "webhooks_event_batch_idx" in plan["indexes"]
    assert plan["whole_scans"] == []
    if plan["thrown_away"] is not None:
        assert plan["thrown_away"] == 0


def test_taking_pending_events_reads_only_the_pending_ones(hanging_backlog):
    # Two pending among HISTORY fanned out. (On PostgreSQL the ids are named with
    # ``= ANY(ARRAY(...))``: with ``IN (SELECT ...)`` a database of the bench's size,
    # filled by saves, hash-joined them with a scan of the whole table; this test's
    # database plans either form well, so there it guards the plan and cannot show that.)
    ArticleFactory.create_batch(2)
    claims_batch = 200  # what a claim asks for (BATCH_SIZE)
    # On PostgreSQL the statement is the UPDATE that takes them: explained (and run again,
    # taking nothing) in the test's transaction, rolled back after it.
    statement = _statement_of(lambda: sql.take_pending_events("default", claims_batch))

    plan = plan_of(*statement)

    assert "webhooks_event_fanout_idx" in plan["indexes"]
    assert plan["whole_scans"] == []
    if plan["thrown_away"] is not None:
        assert plan["thrown_away"] == 0
