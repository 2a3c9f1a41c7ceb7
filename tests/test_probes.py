"""A probe asks "is anything waiting?" many times a second, on tables whose statistics lag
behind a burst. Each must read the head of its own index: rows read and thrown away are what
a hanging endpoint's backlog cost every other endpoint (bench/isolation.py). Runs on SQLite
and, in the integration run, on PostgreSQL (``portable``), where the plan is run and counted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.factories import ArticleFactory, WebhookFactory
from webhooks_app import claims, sql
from webhooks_app.models import Delivery, DeliveryStatus, Event, Lane

pytestmark = [pytest.mark.django_db, pytest.mark.portable]

BACKLOG = 60


def plan_of(statement: str, params: list[Any]) -> dict[str, Any]:
    """What running ``statement`` read: on PostgreSQL the rows its scans threw away and
    the relations it scanned whole; on SQLite (which plans but does not count) the scans."""
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
        return {
            "thrown_away": None,
            # "SCAN t USING INDEX i" reads all of i: a whole scan unless i is partial.
            "whole_scans": [
                d.split()[1] for d in details if d.startswith("SCAN webhooks") and "INDEX" not in d
            ],
            "indexes": {d.split("USING INDEX ")[1].split()[0] for d in details if "INDEX" in d},
        }


def _nodes(plan: dict[str, Any]) -> Any:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


@pytest.fixture
def hanging_backlog():
    """A fast endpoint with nothing due, beside a hanging one with BACKLOG due rows (older
    than anything else), every event fanned out: what each probe sees during
    bench/isolation.py."""
    fast, hanging = WebhookFactory(), WebhookFactory()
    ArticleFactory.create_batch(BACKLOG)
    with transaction.atomic():
        claims.fan_out(timezone.now(), limit=BACKLOG, using="default")
    Delivery.objects.filter(webhook=fast).update(
        status=DeliveryStatus.SUCCEEDED, next_attempt_at=None
    )
    return fast, hanging


def test_a_probe_of_an_idle_webhook_reads_nothing_of_a_hanging_ones_backlog(hanging_backlog):
    fast, hanging = hanging_backlog
    now = timezone.now()
    assert not sql.work_waiting("default", now, [fast.pk])
    assert sql.work_waiting("default", now, [fast.pk, hanging.pk])

    plan = plan_of(*sql.work_waiting_statement("default", now, [fast.pk]))

    assert plan["whole_scans"] == []
    assert "webhooks_delivery_queue_idx" in plan["indexes"]
    assert "webhooks_event_fanout_idx" in plan["indexes"]
    if plan["thrown_away"] is not None:
        assert plan["thrown_away"] == 0


def test_a_probe_of_every_webhook_stops_at_the_first_due_row(hanging_backlog):
    now = timezone.now()
    assert sql.work_waiting("default", now)

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
    fast, hanging = hanging_backlog
    rows: list[Any] = []
    statement = _statement_of(
        lambda: rows.extend(
            sql.due_rows("default", timezone.now(), Lane.FIRST, 5, skip_webhooks=[fast.pk])
        )
    )
    assert [row[1] for row in rows] == [hanging.pk] * 5

    plan = plan_of(*statement)

    assert "webhooks_delivery_due_idx" in plan["indexes"]
    assert plan["whole_scans"] == []


def test_taking_pending_events_reads_only_the_pending_ones(hanging_backlog):
    ArticleFactory.create_batch(2)  # two pending among BACKLOG fanned out
    if connection.vendor == "postgresql":
        # The UPDATE would take them: explain the choice of them alone.
        e = Event._meta
        statement = (
            f'SELECT "id" FROM "{e.db_table}" WHERE "pending_fanout" '  # noqa: S608
            'ORDER BY "created_at" LIMIT 10',
            [],
        )
    else:
        statement = _statement_of(lambda: sql.take_pending_events("default", 10))

    plan = plan_of(*statement)

    assert "webhooks_event_fanout_idx" in plan["indexes"]
    assert plan["whole_scans"] == []
    if plan["thrown_away"] is not None:
        assert plan["thrown_away"] == 0
