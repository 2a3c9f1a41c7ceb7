"""Hand-written SQL for the delivery engine's hot statements.

Profiled on PostgreSQL (docs/benchmarks.md, "Where the time goes"): a claim ran eleven ORM
statements, and building each (filters, excludes, ``values()`` rows, ``bulk_create``) cost
two to four times its round trip; one claim of twenty deliveries took ~25 ms. Written here
instead, the same statements bind parameters and read tuples.

On PostgreSQL, rows travel as one JSON parameter (``json_array_elements``, see
``_json_rows``) and lists of keys as one array (``= ANY``): psycopg parses a statement's
text for placeholders on every call it cannot cache, so a multi-row VALUES list of a hundred
rows (over a thousand placeholders) is slow, and it escapes arrays of text in Python, a
value at a time. SQLite binds ``VALUES`` lists natively. Every name comes from the models'
``_meta`` and is quoted by the backend; every value is a parameter, adapted by the field it
belongs to (``get_db_prep_value``, ``get_db_prep_save``), so dates, booleans and JSON are
stored exactly as the ORM stores them. The SQL is the common subset of PostgreSQL and
SQLite (``RETURNING`` from SQLite 3.35, ``UPDATE ... FROM`` from 3.33, both older than any
SQLite that Python 3.11 ships; other backends use the ORM).
"""

from __future__ import annotations

import datetime
import decimal
import json
import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from django.db import connections, models
from django.db.models import Model
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from webhooks_app.models import (
    DUE_INDEX,
    QUEUE_INDEX,
    Delivery,
    DeliveryStatus,
    Event,
    HeldFanout,
    Lane,
    Lease,
)


def supported(using: str) -> bool:
    vendor = connections[using].vendor
    if vendor == "postgresql":
        return True
    if vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= (3, 35)
    return False


class _Names:
    """Quoted table and column names of one model on one connection."""

    def __init__(self, model: type[Model], connection: Any) -> None:
        quote = connection.ops.quote_name
        self.table = quote(model._meta.db_table)
        self.fields = {field.name: field for field in model._meta.concrete_fields}
        self.columns = {name: quote(str(field.column)) for name, field in self.fields.items()}

    def __getitem__(self, name: str) -> str:
        return str(self.columns[name])

    def value(self, name: str, value: Any, connection: Any) -> Any:
        return self.fields[name].get_db_prep_value(value, connection, prepared=False)


_names: dict[tuple[type[Model], str], _Names] = {}


def _of(model: type[Model], using: str) -> _Names:
    key = (model, using)
    names = _names.get(key)
    if names is None:
        names = _names[key] = _Names(model, connections[using])
    return names


def _execute(using: str, sql: str, params: Sequence[Any]) -> Any:
    connection = connections[using]
    with _cursor(connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else cursor.rowcount


def _cursor(connection: Any) -> Any:
    """Django's cursor, but on psycopg 3 one that binds parameters on the server.

    Django's psycopg cursors bind on the client, quoting every value into the statement's
    text; for our arrays of bodies and headers that quoting was a fifth of a worker's time
    (py-spy, bench/throughput.py). Statements are unnamed (``prepare=False``), which is safe
    behind PgBouncer. The cursor is wrapped as Django wraps its own, so ``execute_wrapper``
    hooks, query logging and error translation still apply.
    """
    if _on_psycopg3(connection):
        connection.validate_thread_sharing()
        raw = _ServerBoundCursor(connection.connection)
        if connection.queries_logged:
            return connection.make_debug_cursor(raw)
        return connection.make_cursor(raw)
    return connection.cursor()


_KEPT_CURSOR = "_webhooks_kept_cursor"


def execute_on_kept_cursor(connection: Any, sql: str, params: Sequence[Any]) -> None:
    """Run one statement on a ``_cursor`` kept on Django's connection object for as long as
    its DB-API connection lives: for the one statement a watched save adds (the Event).

    Making a cursor per statement cost a watched save ~85 µs of CPU on PostgreSQL (Django's
    wrapper, psycopg's cursor and its adapters, client-side quoting; docs/benchmarks.md),
    about a fifth of what the Event added to a save. The kept cursor is Django's wrapper,
    so ``execute_wrapper`` hooks, instrumentation that patches ``CursorWrapper`` and error
    translation still see the statement; while queries are logged (``DEBUG``,
    ``assertNumQueries``) a fresh debug cursor is made per statement, as Django does, so the
    statement is logged. Django's connection objects are per thread, and a closed or
    reconnected DB-API connection gets a new cursor."""
    if connection.queries_logged:
        with _cursor(connection) as cursor:
            cursor.execute(sql, params)
        return
    kept = connection.__dict__.get(_KEPT_CURSOR)
    if kept is None or kept[0] is not connection.connection:
        cursor = _cursor(connection)  # connects if needed
        kept = (connection.connection, cursor)
        connection.__dict__[_KEPT_CURSOR] = kept
    kept[1].execute(sql, params)


def _on_psycopg3(connection: Any) -> bool:
    """A PostgreSQL connection through psycopg 3 (not psycopg2), connected."""
    if connection.vendor != "postgresql" or _psycopg_connection is None:
        return False
    connection.ensure_connection()
    return isinstance(connection.connection, _psycopg_connection)


try:
    import psycopg

    _psycopg_connection: Any = psycopg.Connection

    class _ServerBoundCursor(psycopg.Cursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            kwargs["prepare"] = False
            return super().execute(query, params, **kwargs)

except ImportError:  # SQLite only, or psycopg2
    _psycopg_connection = None
    _ServerBoundCursor = None  # type: ignore[assignment,misc]


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def _postgres(using: str) -> bool:
    return bool(connections[using].vendor == "postgresql")


def _array_type(field: models.Field[Any, Any], connection: Any) -> str:
    return f"{field.db_type(connection)}[]"


def _json_rows(
    fields: Sequence[models.Field[Any, Any]],
    objects: Sequence[Model],
    connection: Any,
    value: Callable[[models.Field[Any, Any], Model, Any], Any],
) -> tuple[list[str], str]:
    """Rows for PostgreSQL as one JSON parameter: (the select expressions reading column
    ``i`` of ``r.v``, the JSON text), for ``FROM json_array_elements(%s::json) AS r(v)``.

    Arrays of text (``unnest``) are escaped element by element by psycopg in Python (a
    regular expression per value): a Delivery row with its dozen text columns cost ~55 µs
    that way. The JSON text is written by the C encoder and parsed by the server: a few µs
    a row. Each value is what ``value`` gives (the field's ``get_db_prep_save``); the server
    casts it back to the column's type. JSON columns travel as JSON."""
    expressions = []
    for number, field in enumerate(fields):
        if isinstance(field, models.JSONField):
            # Django stores None in a JSON column as SQL NULL, not as JSON null.
            expressions.append(f"NULLIF((r.v->{number})::jsonb, 'null'::jsonb)")
        else:
            expressions.append(f"(r.v->>{number})::{field.db_type(connection)}")
    readers = [_json_reader(field, connection, value) for field in fields]
    rows = [[read(obj) for read in readers] for obj in objects]
    # Not ASCII-escaped: smaller, and a SQL_ASCII database refuses \u escapes in ->>.
    return expressions, json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def _json_reader(
    field: models.Field[Any, Any],
    connection: Any,
    value: Callable[[models.Field[Any, Any], Model, Any], Any],
) -> Callable[[Model], Any]:
    """How ``_json_rows`` reads one field of each row, decided once per field. Profiled in
    a worker (bench/worker_path.py), asking each value's field the same questions per row
    (``value``, then ``get_db_prep_save`` and its checks of every timestamp) was a sixth of
    the run's own time. Values that are their stored form (``is_plain``, JSON) and aware
    timestamps that no ``auto_now`` replaces are read as they are; the rest as before."""
    read_attribute = operator.attrgetter(field.attname)
    if isinstance(field, models.JSONField) or is_plain(field):
        return read_attribute

    def prepared(obj: Model) -> Any:
        return _as_json_scalar(value(field, obj, connection))

    if not isinstance(field, models.DateTimeField) or field.auto_now or field.auto_now_add:
        return prepared

    def timestamp(obj: Model) -> Any:
        moment = read_attribute(obj)
        if moment is None:
            return None
        if isinstance(moment, datetime.datetime) and moment.utcoffset() is not None:
            # What get_db_prep_save gives an aware datetime on PostgreSQL: the same one.
            return moment.isoformat()
        return prepared(obj)  # naive: Django's own warning and conversion

    return timestamp


def _as_json_scalar(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    raise TypeError(f"no JSON form for a {type(value).__name__} column value")


def read_datetime(value: Any) -> datetime.datetime:
    """A timestamp as the backend returns it (SQLite: text in UTC) as an aware datetime."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        assert parsed is not None, value
        value = parsed
    if timezone.is_naive(value):
        value = timezone.make_aware(value, datetime.UTC)
    return value  # type: ignore[no-any-return]


# --- the claim lock ------------------------------------------------------------------------


def lock(using: str, name: str) -> None:
    """``Lease.objects.lock``: an UPDATE of one row takes the row lock on PostgreSQL and the
    write lock on SQLite; the row is created the first time."""
    if not supported(using):
        Lease.objects.using(using).lock(name)
        return
    lease = _of(Lease, using)
    sql = f"UPDATE {lease.table} SET {lease['owner']} = '' WHERE {lease['name']} = %s"  # noqa: S608
    if not _execute(using, sql, [name]):
        Lease.objects.using(using).get_or_create(
            name=name, defaults={"owner": "", "expires_at": timezone.now()}
        )
        _execute(using, sql, [name])


# --- reading what is out and what is due -----------------------------------------------------


def count_leased(
    using: str, now: datetime.datetime
) -> list[tuple[int, str, int, datetime.datetime]]:
    """(webhook id, lane, rows, earliest lease end) of the rows held right now (the leased
    rows' index): the earliest end tells how long the oldest of them has been out."""
    if not supported(using):
        rows = (
            Delivery.objects.using(using)
            .leased(now)
            .values_list("webhook_id", "lane")
            .annotate(n=models.Count("id"), earliest=models.Min("next_attempt_at"))
            .order_by()
        )
        return [(int(w), str(lane), int(n), earliest) for w, lane, n, earliest in rows]
    connection = connections[using]
    d = _of(Delivery, using)
    due = d["next_attempt_at"]
    sql = (
        f"SELECT {d['webhook']}, {d['lane']}, COUNT(*), MIN({due}) FROM {d.table} "  # noqa: S608
        f"WHERE {d['lease_token']} > '' AND {due} > %s "
        f"GROUP BY {d['webhook']}, {d['lane']}"
    )
    return [
        (int(webhook_id), str(lane), int(count), read_datetime(earliest))
        for webhook_id, lane, count, earliest in _execute(
            using, sql, [d.value("next_attempt_at", now, connection)]
        )
    ]


# The pending rows' partial indexes state their condition as this literal. SQLite uses a
# partial index only for a statement that states the same (it plans before a parameter is
# bound), so statements that must walk one state it too. A constant of ours, not input.
PENDING = f"'{DeliveryStatus.PENDING.value}'"
assert DeliveryStatus.PENDING.value.isalpha()


def _indexed_by(using: str, index: str) -> str:
    """On SQLite, the clause that makes a statement read ``index``. Without statistics
    (``ANALYZE``, which nobody runs on an embedded database) SQLite prefers the index whose
    first column a condition names with ``=`` (status, created), and then reads and sorts
    every pending row there, a backlog of a hundred thousand included, to return the first
    few. PostgreSQL chooses these indexes by itself (tests/test_probes.py). The statement
    must state the partial index's condition as a literal (``PENDING``), or SQLite cannot
    prepare it."""
    if connections[using].vendor != "sqlite":
        return ""
    return f" INDEXED BY {connections[using].ops.quote_name(index)}"


# The columns due_rows() returns, in order.
DUE_COLUMNS = ("id", "webhook_id", "event_id", "attempts", "max_attempts", "next_trigger", "lane")


# A claim that knows more webhooks than this walks the lane instead of their queues.
QUEUES_PER_SCAN = 200


def due_rows(
    using: str,
    now: datetime.datetime,
    lane: str,
    limit: int,
    *,
    skip_webhooks: Sequence[int] = (),
    skip_ids: Sequence[int] = (),
    queues: Mapping[int, int] | None = None,
) -> list[tuple[Any, ...]]:
    """Due rows of one lane, oldest first, with their event's body as the last column.

    With ``queues`` (webhook id: at most how many of its rows) each of those webhooks'
    queues is read on its own (the pending rows' index by webhook, due order), and never
    further than its share: a hanging endpoint's thousands of due rows are not read at all,
    however old they are. Without it the scan walks the whole lane in due order (the due
    index), leaving ``skip_webhooks`` out; rows of webhooks nobody knows are found that way.
    """
    if queues is not None:
        queues = {webhook: room for webhook, room in queues.items() if room > 0}
        if not queues:
            return []
    if not supported(using):
        return _due_rows_with_the_orm(using, now, lane, limit, skip_webhooks, skip_ids, queues)
    connection = connections[using]
    d = _of(Delivery, using)
    e = _of(Event, using)
    columns = [
        d["webhook" if name == "webhook_id" else "event" if name == "event_id" else name]
        for name in DUE_COLUMNS
    ]
    due_before = d.value("next_attempt_at", now, connection)
    conditions = [
        f"d.{d['status']} = {PENDING}",
        f"d.{d['lane']} = %s",
        f"d.{d['next_attempt_at']} <= %s",
    ]
    params: list[Any] = [lane, due_before]
    postgres = _postgres(using)
    for column, values in ((d["webhook"], skip_webhooks), (d["id"], skip_ids)):
        if not values:
            continue
        if postgres:
            conditions.append(f"d.{column} <> ALL(%s::bigint[])")
            params.append(list(values))
        else:
            conditions.append(f"d.{column} NOT IN ({_placeholders(len(values))})")
            params += list(values)
    selected = ", ".join(f"d.{column}" for column in columns)
    if queues is None:
        sql = (
            f"SELECT {selected}, ev.{e['body']} "  # noqa: S608
            f"FROM {d.table} d{_indexed_by(using, DUE_INDEX)} "
            f"JOIN {e.table} ev ON ev.{e['id']} = d.{d['event']} "
            f"WHERE {' AND '.join(conditions)} "
            f"ORDER BY d.{d['next_attempt_at']} LIMIT {int(limit)}"
        )
        return list(_execute(using, sql, params))
    due = d["next_attempt_at"]
    if postgres:
        # One index range per webhook (LATERAL), each stopping at its share.
        inner = ", ".join(f"d.{column}" for column in dict.fromkeys([*columns, due]))
        sql = (
            f"SELECT {selected}, ev.{e['body']} "  # noqa: S608
            "FROM unnest(%s::bigint[], %s::integer[]) AS queue(webhook, room) "
            f"CROSS JOIN LATERAL (SELECT {inner} FROM {d.table} d "
            f"WHERE d.{d['webhook']} = queue.webhook AND {' AND '.join(conditions)} "
            f"ORDER BY d.{due} LIMIT queue.room) d "
            f"JOIN {e.table} ev ON ev.{e['id']} = d.{d['event']} "
            f"ORDER BY d.{due} LIMIT {int(limit)}"
        )
        return list(_execute(using, sql, [list(queues), list(queues.values()), *params]))
    # SQLite: the same as one compound statement, a LIMIT per webhook.
    aliased = ", ".join(f"d.{column} AS c{number}" for number, column in enumerate(columns))
    parts = []
    all_params: list[Any] = []
    for webhook, room in queues.items():
        parts.append(
            f"SELECT * FROM (SELECT {aliased}, d.{d['event']} AS event_key, "  # noqa: S608
            f"d.{due} AS due FROM {d.table} d "
            f"WHERE d.{d['webhook']} = %s AND {' AND '.join(conditions)} "
            f"ORDER BY d.{due} LIMIT {int(room)})"
        )
        all_params += [webhook, *params]
    outputs = ", ".join(f"queued.c{number}" for number in range(len(columns)))
    sql = (
        f"SELECT {outputs}, ev.{e['body']} FROM ({' UNION ALL '.join(parts)}) queued "  # noqa: S608
        f"JOIN {e.table} ev ON ev.{e['id']} = queued.event_key "
        f"ORDER BY queued.due LIMIT {int(limit)}"
    )
    return list(_execute(using, sql, all_params))


def _due_rows_with_the_orm(
    using: str,
    now: datetime.datetime,
    lane: str,
    limit: int,
    skip_webhooks: Sequence[int],
    skip_ids: Sequence[int],
    queues: Mapping[int, int] | None,
) -> list[tuple[Any, ...]]:
    rows = (
        Delivery.objects.using(using)
        .due_in_lane(lane, now)
        .exclude(webhook_id__in=skip_webhooks)
        .exclude(id__in=skip_ids)
    )
    if queues is not None:
        rows = rows.filter(webhook_id__in=list(queues))
    return list(rows.values_list(*DUE_COLUMNS, "event__body")[:limit])


class Probe(NamedTuple):
    """What ``work_waiting`` found: work for a sender, or (only when there is none) a held
    webhook whose queue ``holds.releasable`` must look at."""

    work: bool
    held: bool


def work_waiting(
    using: str, now: datetime.datetime, webhooks: Mapping[int, int] | None = None
) -> Probe:
    """Is there anything a sender could do: events to fan out, due deliveries, or events a
    held webhook is owed while its queue is shorter than its depth (holds.py)? With
    ``webhooks`` (id: depth) only those webhooks' rows and holds count; without, every due
    row and every hold. One round trip; ``held`` says when the caller must look at a hold's
    queue (on SQLite, or for every webhook)."""
    if webhooks is not None and not webhooks:
        webhooks = {0: 1}  # no webhook has id 0: only events to fan out count
    if not supported(using):
        due = Delivery.objects.using(using).due(now)
        if webhooks is not None:
            due = due.filter(webhook_id__in=list(webhooks))
        if Event.objects.using(using).filter(pending_fanout=True).exists() or due.exists():
            return Probe(work=True, held=False)
        held = HeldFanout.objects.using(using)
        if webhooks is not None:
            held = held.filter(webhook_id__in=list(webhooks))
        return Probe(work=False, held=bool(held.exists()))
    sql, params = work_waiting_statement(using, now, webhooks)
    (row,) = _execute(using, sql, params)
    # The second column, where there is one, says whether any of them is held.
    return Probe(work=bool(row[0]), held=not row[0] and len(row) > 1 and bool(row[1]))


def held_fanouts(using: str) -> dict[int, tuple[int, int | None]]:
    """Every held webhook's id, with the first fan-out batch it has no rows for and the
    batch its hold ends at, if it does (read in every claim: hand-written, as compiling
    the ORM's query cost more than running it)."""
    if not supported(using):
        rows = HeldFanout.objects.using(using).values_list(
            "webhook_id", "from_batch", "until_batch"
        )
    else:
        h = _of(HeldFanout, using)
        sql = f"SELECT {h['webhook']}, {h['from_batch']}, {h['until_batch']} FROM {h.table}"  # noqa: S608
        rows = _execute(using, sql, [])
    return {
        int(webhook_id): (int(first), None if until is None else int(until))
        for webhook_id, first, until in rows
    }


def work_waiting_statement(
    using: str, now: datetime.datetime, webhooks: Mapping[int, int] | None
) -> tuple[str, list[Any]]:
    """``work_waiting``'s statement, written so that each probe reads the head of its own
    index (on a table of more than a few pages: a smaller one is best read whole).

    Probes run many times a second, on tables whose statistics lag far behind (a burst of
    events in between two autovacuum runs). Written as plain ``EXISTS``, PostgreSQL chose
    the due index for a probe of known webhooks and filtered a hanging endpoint's whole
    backlog out of it, row by row (~1,950 rows, 1-3 ms a probe, most of what that endpoint
    cost the others in bench/isolation.py), and chose a scan of the events table for the
    fan-out probe. Here each lookup is the first row of an ordered index range (a scalar
    subquery keeps its ``ORDER BY`` and ``LIMIT``, which ``EXISTS`` would drop): the
    pending events' index, or, for every webhook, the due index. For the webhooks given,
    one range of their queue index (webhook, lane, due) per webhook and lane, with no order
    to keep (PostgreSQL read the due index for an order, and filtered).

    Holds: with ``webhooks``, on PostgreSQL, a hold of one of them whose queue of first
    attempts has no row at its depth (``OFFSET depth - 1``, read from the queue index); on
    SQLite, which allows no ``OFFSET`` from the outer query, a second column saying whether
    one of them is held at all. Without, a second column saying whether any webhook is
    held (each one's depth depends on its cap: ``holds.releasable`` looks)."""
    connection = connections[using]
    d = _of(Delivery, using)
    e = _of(Event, using)
    h = _of(HeldFanout, using)
    due_before = d.value("next_attempt_at", now, connection)
    lanes = [lane.value for lane in Lane]
    probes = [
        f"(SELECT {e['created_at']} FROM {e.table} WHERE {e['pending_fanout']} "  # noqa: S608
        f"ORDER BY {e['created_at']} LIMIT 1) IS NOT NULL"
    ]
    due = d["next_attempt_at"]
    if webhooks is None:
        probes.append(
            f"(SELECT {due} FROM {d.table}{_indexed_by(using, DUE_INDEX)} "  # noqa: S608
            f"WHERE {d['status']} = {PENDING} AND {due} <= %s "
            f"AND {d['lane']} IN ({_placeholders(len(lanes))}) "
            f"ORDER BY {due} LIMIT 1) IS NOT NULL"
        )
        params: list[Any] = [due_before, *lanes]
    elif _postgres(using):
        probes.append(
            "EXISTS(SELECT 1 FROM unnest(%s::bigint[]) AS queue(webhook) "  # noqa: S608
            f"CROSS JOIN unnest(%s::{_array_type(d.fields['lane'], connection)}) AS lanes(lane) "
            f"CROSS JOIN LATERAL (SELECT {due} FROM {d.table} "
            f"WHERE {d['webhook']} = queue.webhook AND {d['lane']} = lanes.lane "
            f"AND {d['status']} = {PENDING} AND {due} <= %s LIMIT 1) AS due)"
        )
        params = [list(webhooks), lanes, due_before]
        probes.append(
            f"EXISTS(SELECT 1 FROM {h.table} h "  # noqa: S608
            "JOIN unnest(%s::bigint[], %s::integer[]) AS refill(webhook, depth) "
            f"ON refill.webhook = h.{h['webhook']} "
            f"WHERE (SELECT 1 FROM {d.table} WHERE {d['webhook']} = refill.webhook "
            f"AND {d['status']} = {PENDING} AND {d['lane']} = %s "
            "OFFSET refill.depth - 1 LIMIT 1) IS NULL)"
        )
        params += [list(webhooks), list(webhooks.values()), Lane.FIRST.value]
    else:
        # IN lists on the queue index's leading columns: one range per webhook and lane
        # (named: with two webhooks or more SQLite preferred the status index).
        probes.append(
            f"EXISTS(SELECT 1 FROM {d.table}{_indexed_by(using, QUEUE_INDEX)} "  # noqa: S608
            f"WHERE {d['status']} = {PENDING} "
            f"AND {d['webhook']} IN ({_placeholders(len(webhooks))}) "
            f"AND {d['lane']} IN ({_placeholders(len(lanes))}) AND {due} <= %s)"
        )
        params = [*webhooks, *lanes, due_before]
        held = (
            f"EXISTS(SELECT 1 FROM {h.table} "  # noqa: S608
            f"WHERE {h['webhook']} IN ({_placeholders(len(webhooks))}))"
        )
        return f"SELECT {' OR '.join(probes)}, {held}", [*params, *webhooks]
    if webhooks is None:
        return f"SELECT {' OR '.join(probes)}, EXISTS(SELECT 1 FROM {h.table})", params  # noqa: S608
    return f"SELECT {' OR '.join(probes)}", params


def take_pending_events(
    using: str, limit: int
) -> tuple[int, list[tuple[str, str, str, datetime.datetime, str]]]:
    """The next fan-out batch's number, and (id, name, model, created_at, body) of the
    oldest events not fanned out yet, oldest first, marked fanned out in that batch: the
    caller creates their deliveries in the same transaction (under the claim lock), so they
    commit or roll back together, and batches are numbered in the order fan-outs ran. On
    PostgreSQL one ``UPDATE ... RETURNING`` (a claim's statement fewer); elsewhere a read,
    then the mark."""
    if not supported(using):
        events = list(
            Event.objects.using(using)
            .pending_fanout()
            .values_list("id", "name", "model", "created_at", "body")[:limit]
        )
        if not events:
            return 0, []
        batch = next_fanout_batch(using)
        mark_fanned_out(using, [event[0] for event in events], batch)
        return batch, events
    e = _of(Event, using)
    columns = f"{e['id']}, {e['name']}, {e['model']}, {e['created_at']}, {e['body']}"
    oldest = (
        # The bare column, as the pending events' partial index is declared: SQLite uses a
        # partial index only for a condition that states its own (``= %s`` scanned every
        # event ever written, oldest first, to reach the pending ones).
        f"FROM {e.table} WHERE {e['pending_fanout']} ORDER BY {e['created_at']} LIMIT {int(limit)}"
    )
    if _postgres(using):
        # ``= ANY(ARRAY(...))``, not ``IN (...)``: for the IN form the planner hash-joined
        # the chosen ids with a scan of the whole events table whenever it judged the table
        # small (2-3 ms at 5,000 events, inside the claim lock; 0.4 ms this way). The
        # batch's number is an uncorrelated subquery: computed once, before the update.
        sql = (
            f"UPDATE {e.table} SET {e['pending_fanout']} = %s, "  # noqa: S608
            f"{e['fanout_batch']} = ({_next_batch_sql(using)}) "
            f"WHERE {e['id']} = ANY(ARRAY(SELECT {e['id']} {oldest})) "
            f"RETURNING {columns}, {e['fanout_batch']}"
        )
        rows = list(_execute(using, sql, [False]))
        batch = int(rows[0][-1]) if rows else 0
        rows = [row[:-1] for row in rows]
    else:
        rows = list(_execute(using, f"SELECT {columns} {oldest}", []))
        batch = next_fanout_batch(using) if rows else 0
        mark_fanned_out(using, [str(row[0]) for row in rows], batch)
    events = [
        (str(id_), str(name), str(model), read_datetime(created), str(body))
        for id_, name, model, created, body in rows
    ]
    # RETURNING keeps no order: oldest first, as they were chosen.
    events.sort(key=lambda event: (event[3], event[0]))
    return batch, events


def _next_batch_sql(using: str) -> str:
    """The next fan-out batch: after every batch an event still carries, and never below a
    held webhook's ``from_batch`` (the events of the batches before it may all have been
    pruned, and a number used again would be one that webhook is not owed)."""
    e = _of(Event, using)
    h = _of(HeldFanout, using)
    return (
        "SELECT COALESCE(MAX(batches.number), 0) + 1 FROM ("  # noqa: S608
        # The condition is the batch index's own: without it SQLite reads the whole table.
        f"SELECT MAX({e['fanout_batch']}) AS number FROM {e.table} "
        f"WHERE {e['fanout_batch']} IS NOT NULL "
        f"UNION ALL SELECT MAX({h['from_batch']}) - 1 FROM {h.table}) AS batches"
    )


def next_fanout_batch(using: str) -> int:
    """``_next_batch_sql``'s number, where one statement cannot take and mark."""
    (row,) = _execute(using, _next_batch_sql(using), [])
    return int(row[0])


# --- writing ---------------------------------------------------------------------------------


def mark_fanned_out(using: str, event_ids: Sequence[str], batch: int) -> None:
    """``take_pending_events``'s mark where one statement cannot take and mark (not on
    PostgreSQL)."""
    if not supported(using):
        Event.objects.using(using).filter(id__in=event_ids).update(
            pending_fanout=False, fanout_batch=batch
        )
        return
    e = _of(Event, using)
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        sql = (
            f"UPDATE {e.table} SET {e['pending_fanout']} = %s, {e['fanout_batch']} = %s "  # noqa: S608
            f"WHERE {e['id']} IN ({_placeholders(len(chunk))})"
        )
        _execute(using, sql, [False, batch, *chunk])


def lease(
    using: str, ids: Sequence[int], token: str, until: datetime.datetime, now: datetime.datetime
) -> int:
    """Give these rows to ``token`` until ``until`` if they are still due; returns how many."""
    if not supported(using):
        return Delivery.objects.using(using).filter(id__in=ids).due(now).lease_to(token, until)
    connection = connections[using]
    d = _of(Delivery, using)
    leased = 0
    size = len(ids) if _postgres(using) else 500
    for start in range(0, len(ids), max(1, size)):
        chunk = list(ids[start : start + size])
        match_params: list[Any]
        if _postgres(using):
            match, match_params = f"{d['id']} = ANY(%s::bigint[])", [chunk]
        else:
            match, match_params = f"{d['id']} IN ({_placeholders(len(chunk))})", list(chunk)
        sql = (
            f"UPDATE {d.table} SET {d['lease_token']} = %s, {d['next_attempt_at']} = %s "  # noqa: S608
            f"WHERE {match} AND {d['status']} = %s AND {d['next_attempt_at']} <= %s"
        )
        params = [
            token,
            d.value("next_attempt_at", until, connection),
            *match_params,
            DeliveryStatus.PENDING.value,
            d.value("next_attempt_at", now, connection),
        ]
        leased += int(_execute(using, sql, params))
    return leased


def insert(using: str, objects: Sequence[Model], *, returning_ids: bool = False) -> None:
    """``bulk_create`` for the engine's rows: one multi-row INSERT per 100 rows; with
    ``returning_ids`` the new primary keys are set on the objects (``RETURNING``)."""
    if not objects:
        return
    model = type(objects[0])
    if not supported(using):
        model._base_manager.using(using).bulk_create(objects)
        return
    connection = connections[using]
    names = _of(model, using)
    pk_name = model._meta.pk.name if model._meta.pk else "id"
    fields = [
        field
        for name, field in names.fields.items()
        if not (name == pk_name and isinstance(field, models.AutoField))
    ]
    column_list = ", ".join(names[field.name] for field in fields)
    if _postgres(using):
        _insert_postgres(using, objects, fields, names, pk_name, returning_ids)
        return
    row = f"({_placeholders(len(fields))})"
    returning = f" RETURNING {names[pk_name]}" if returning_ids else ""
    for start in range(0, len(objects), 100):
        chunk = objects[start : start + 100]
        params: list[Any] = []
        for obj in chunk:
            for field in fields:
                params.append(column_value(field, obj, connection))
        sql = (
            f"INSERT INTO {names.table} ({column_list}) "  # noqa: S608
            f"VALUES {', '.join([row] * len(chunk))}{returning}"
        )
        result = _execute(using, sql, params)
        # Both backends return a multi-row INSERT's rows in VALUES order.
        _saved(chunk, result if returning_ids else None, using)


def inserts_from_events(using: str) -> bool:
    """Whether ``insert_for_events`` can build rows on this database's server."""
    return supported(using) and _postgres(using)


def insert_for_events(
    using: str, pairs: Sequence[tuple[str, int]], templates: Mapping[int, Delivery]
) -> None:
    """One Delivery per (event id, webhook id) pair, built by the server from the Event row
    and that webhook's template row (``events.new_delivery`` for one of its events, due at
    that event's ``created_at``, or skipped). ``event``, ``event_name`` and ``event_model``
    come from the event; ``next_attempt_at`` is the event's ``created_at`` when the
    template's is set, else NULL; every other column is the template's. PostgreSQL only
    (``inserts_from_events``).

    For the rows a fan-out does not send at once (an endpoint at its cap, a disabled one):
    building, adapting and escaping one object per row cost ~95 µs a row, which is what a
    second, hanging subscriber added to every event (docs/benchmarks.md); here a row costs
    the server's insert and two array elements (the templates travel as JSON rows).
    """
    if not pairs:
        return
    connection = connections[using]
    d = _of(Delivery, using)
    e = _of(Event, using)
    from_event = {"event": e["id"], "event_name": e["name"], "event_model": e["model"]}
    # The template rows: their webhook (to join on), when they are due, then the rest.
    template_fields = [d.fields["webhook"], d.fields["next_attempt_at"]]
    template_fields += [
        field
        for name, field in d.fields.items()
        if name not in from_event
        and field not in template_fields
        and not isinstance(field, models.AutoField)
    ]
    expressions, template_rows = _json_rows(
        template_fields, list(templates.values()), connection, column_value
    )
    aliases = [f"c{number}" for number in range(len(template_fields))]
    values = [
        *(f"e.{column}" for column in from_event.values()),
        "t.c0",
        # Due as its event happened, or NULL (skipped) when the template's is NULL.
        f"CASE WHEN t.c1 IS NOT NULL THEN e.{e['created_at']} END",
        *(f"t.{alias}" for alias in aliases[2:]),
    ]
    columns = [*from_event, *(field.name for field in template_fields)]
    sql = (
        f"INSERT INTO {d.table} ({', '.join(d[name] for name in columns)}) "  # noqa: S608
        f"SELECT {', '.join(values)} "
        f"FROM unnest(%s::{_array_type(e.fields['id'], connection)}, %s::bigint[]) "
        "AS p(event_id, webhook_id) "
        f"JOIN {e.table} e ON e.{e['id']} = p.event_id "
        f"JOIN (SELECT {', '.join(expressions)} FROM json_array_elements(%s::json) AS r(v)) "
        f"AS t({', '.join(aliases)}) ON t.c0 = p.webhook_id"
    )
    params = [
        [event_id for event_id, _ in pairs],
        [webhook_id for _, webhook_id in pairs],
        template_rows,
    ]
    _execute(using, sql, params)


def copy(using: str, objects: Sequence[Model]) -> None:
    """New rows of one model that carry their own primary keys, at once: PostgreSQL's
    ``COPY ... FROM STDIN`` on psycopg 3, else ``insert()``.

    For a transaction's events (``outbox``): 1,000 rows took ~20 µs each by COPY against
    50-190 µs by a multi-row INSERT, whose text arrays psycopg escapes in Python (measured
    on PostgreSQL, docs/benchmarks.md). COPY does not pass through Django's execute
    wrappers or query log; its errors are translated as Django translates a statement's.
    """
    if not objects:
        return
    connection = connections[using]
    if not _on_psycopg3(connection):
        insert(using, objects)
        return
    names = _of(type(objects[0]), using)
    fields = list(names.fields.values())
    columns = ", ".join(names.columns[field.name] for field in fields)
    statement = f"COPY {names.table} ({columns}) FROM STDIN"
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(statement) as rows,
    ):
        for obj in objects:
            rows.write_row([column_value(field, obj, connection) for field in fields])
    _saved(objects, None, using)


# Fields whose stored form is the Python value itself: the per-value adaptation the ORM does
# is skipped for them (it was a third of an INSERT's own time for a hundred rows).
_PLAIN_FIELDS = (
    models.BigAutoField,
    models.AutoField,
    models.BooleanField,
    models.CharField,
    models.IntegerField,
    models.TextField,
)


def is_plain(field: models.Field[Any, Any]) -> bool:
    """Whether the field's stored form is its Python value (``_PLAIN_FIELDS``, or a
    foreign key to one)."""
    return isinstance(field, _PLAIN_FIELDS) or (
        isinstance(field, models.ForeignKey) and isinstance(field.target_field, _PLAIN_FIELDS)
    )


def column_value(field: models.Field[Any, Any], obj: Model, connection: Any) -> Any:
    if is_plain(field):
        return getattr(obj, field.attname)
    return field.get_db_prep_save(field.pre_save(obj, True), connection)


def _insert_postgres(
    using: str,
    objects: Sequence[Model],
    fields: list[models.Field[Any, Any]],
    names: _Names,
    pk_name: str,
    returning_ids: bool,
) -> None:
    """``INSERT ... SELECT`` from the rows as one JSON parameter (``_json_rows``). The new
    ids come back and are matched to the objects by position: the rows are selected in
    their order, and one INSERT returns its rows in the order it inserted them."""
    connection = connections[using]
    expressions, rows = _json_rows(fields, objects, connection, column_value)
    column_list = ", ".join(names[field.name] for field in fields)
    returning = f" RETURNING {names[pk_name]}" if returning_ids else ""
    sql = (
        f"INSERT INTO {names.table} ({column_list}) "  # noqa: S608
        f"SELECT {', '.join(expressions)} "
        f"FROM json_array_elements(%s::json) WITH ORDINALITY AS r(v, n) ORDER BY r.n{returning}"
    )
    result = _execute(using, sql, [rows])
    _saved(objects, result if returning_ids else None, using)


def _saved(objects: Sequence[Model], new_ids: Any, using: str) -> None:
    """Mark inserted objects as saved in ``using``, with their ids when they were returned."""
    if new_ids is not None:
        for obj, (pk,) in zip(objects, new_ids, strict=True):
            obj.pk = pk
    for obj in objects:
        obj._state.adding = False
        obj._state.db = using


# What an attempt changes on its Delivery row.
OUTCOME_FIELDS = (
    "status",
    "attempts",
    "next_attempt_at",
    "next_trigger",
    "lane",
    "lease_token",
    "last_status_code",
    "last_error",
    "last_attempt_at",
    "last_duration_ms",
    "completed_at",
)


def write_outcomes(using: str, deliveries: Sequence[Delivery], lease_token: str) -> int:
    """One ``UPDATE ... FROM`` the rows' values (a JSON array on PostgreSQL, ``VALUES`` of
    200 rows at a time on SQLite), for the rows ``lease_token`` still holds; returns how
    many it updated. (Django's ``bulk_update`` builds a ``CASE`` per row and field;
    resolving those was most of a worker's time.) In primary-key order, the order a
    webhook's deletion locks its leased rows in (models.py), so the two never deadlock
    over a pair of rows."""
    deliveries = sorted(deliveries, key=lambda row: row.pk)
    if not supported(using):
        return _write_outcomes_with_the_orm(using, deliveries, lease_token)
    connection = connections[using]
    d = _of(Delivery, using)
    fields = [d.fields[name] for name in OUTCOME_FIELDS]
    pk = d.fields["id"]
    columns = [d[name] for name in OUTCOME_FIELDS]
    assignments = ", ".join(f"{column} = v.{column}" for column in columns)
    if _postgres(using):
        expressions, rows = _json_rows(
            [pk, *fields],
            deliveries,
            connection,
            lambda field, row, connection: field.get_db_prep_save(
                getattr(row, field.attname), connection
            ),
        )
        sql = (
            f"UPDATE {d.table} SET {assignments} "  # noqa: S608
            f"FROM (SELECT {', '.join(expressions)} FROM json_array_elements(%s::json) AS r(v)) "
            f"AS v ({d['id']}, {', '.join(columns)}) "
            f"WHERE {d.table}.{d['id']} = v.{d['id']} AND {d.table}.{d['lease_token']} = %s"
        )
        return int(_execute(using, sql, [rows, lease_token]))
    updated = 0
    row_sql = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
    # VALUES names its columns column1, column2, ...; the statement starts with UPDATE, or
    # Python's sqlite3 reports no row count (-1) for it.
    names = ", ".join(
        f"column{number} AS {column}" for number, column in enumerate([d["id"], *columns], start=1)
    )
    for start in range(0, len(deliveries), 200):
        chunk = deliveries[start : start + 200]
        params: list[Any] = []
        for row in chunk:
            params.append(row.pk)
            params.extend(
                field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields
            )
        params.append(lease_token)
        sql = (
            f"UPDATE {d.table} SET {assignments} "  # noqa: S608
            f"FROM (SELECT {names} FROM (VALUES {', '.join([row_sql] * len(chunk))})) AS v "
            f"WHERE {d.table}.{d['id']} = v.{d['id']} AND {d.table}.{d['lease_token']} = %s"
        )
        updated += int(_execute(using, sql, params))
    return updated


def _write_outcomes_with_the_orm(
    using: str, deliveries: Sequence[Delivery], lease_token: str
) -> int:
    """Other databases: one UPDATE per distinct outcome, per-row timestamps in bulk."""
    held = Delivery.objects.using(using).filter(lease_token=lease_token)
    per_row = ("last_attempt_at", "last_duration_ms", "completed_at")
    updated = held.bulk_update(deliveries, list(per_row))
    shared = tuple(name for name in OUTCOME_FIELDS if name not in per_row)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for row in deliveries:
        groups.setdefault(tuple(getattr(row, name) for name in shared), []).append(row.pk)
    for values, pks in groups.items():
        held.filter(pk__in=pks).update(**dict(zip(shared, values, strict=True)))
    return updated
