"""Statements on hot paths, compiled by Django once and then only executed: the two a
watched save adds, and the worker's read of the webhooks at every fan-out.

Profiled on PostgreSQL (docs/benchmarks.md, "Where the time goes"): building a queryset and
compiling it to SQL costs a watched save more than the database does. ``Model._base_manager
.filter(pk=...).first()`` took ~540 µs of which ~160 µs was the round trip, and an Event's
``save()`` ~400 µs of which ~160 µs. So the SQL of both statements is produced by Django's
own compiler, once per model, field list and database, and later calls only bind new
parameters. Rows read go through the same converters a queryset applies; values written go
through each field's ``get_db_prep_save``, as ``Model.save()`` does.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models

from webhooks_app import sql
from webhooks_app.models import Event


class _Unprepared(Exception):
    """The compiled query is not the one-parameter statement we expect; use the ORM."""


def _probe_value(field: models.Field[Any, Any]) -> Any:
    try:
        return field.to_python("1")
    except (ValidationError, TypeError, ValueError):
        return field.to_python(str(uuid.UUID(int=1)))


class CompiledQuery:
    """A model queryset compiled once; each run executes its SQL (with its own parameters,
    or new ones of the same shape) and builds the instances as the queryset would
    (converters, ``from_db``).

    For the webhooks a fan-out reads in every claim (``subscriptions.receiving_webhooks``):
    building and compiling the queryset took ~450 µs of its ~860 µs on PostgreSQL, the
    round trip ~200 µs (docs/benchmarks.md). The rows are read at every call: a change made
    by ``QuerySet.update()``, which sends no signal, is seen by the next one. The compiler
    (and its converters) come from the first thread's connection: they depend only on the
    backend, which every connection to one alias shares."""

    def __init__(self, queryset: models.QuerySet[Any]) -> None:
        self.model = queryset.model
        self.using = queryset.db
        self.compiler = queryset.query.get_compiler(using=self.using)
        self.sql, self.params = self.compiler.as_sql()
        columns = [column for column, _, _ in self.compiler.select]
        if any(getattr(column, "target", None) is None for column in columns):
            raise _Unprepared(self.sql)  # annotations or expressions: not plain fields
        self.attnames = [column.target.attname for column in columns]
        self.converters = self.compiler.get_converters(columns)

    def instances(self, params: Sequence[Any] | None = None) -> list[models.Model]:
        connection = connections[self.using]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params if params is None else params)
            rows = cursor.fetchall()
        if self.converters:
            rows = list(self.compiler.apply_converters(rows, self.converters))
        return [self.model.from_db(self.using, self.attnames, list(row)) for row in rows]


class StoredRowReader(CompiledQuery):
    """``SELECT <fields> FROM <table> WHERE pk = %s``, returning a model instance."""

    def __init__(self, model: type[models.Model], field_names: tuple[str, ...], using: str):
        pk = model._meta.pk
        assert pk is not None
        self.pk_field = pk
        queryset = model._base_manager.using(using).order_by()
        if field_names:
            queryset = queryset.only(*field_names)
        # Any value of the primary key's type will do: it is replaced at every call.
        super().__init__(queryset.filter(pk=_probe_value(pk)))
        if len(self.params) != 1:
            raise _Unprepared(self.sql)

    def read(self, pk: Any) -> models.Model | None:
        value = self.pk_field.get_db_prep_value(pk, connections[self.using], prepared=False)
        found = self.instances([value])
        return found[0] if found else None


class EventInserter:
    """``INSERT INTO webhooks_app_event (...) VALUES (...)`` for one Event."""

    def __init__(self, using: str) -> None:
        self.using = using
        connection = connections[using]
        self.fields = [field for field in Event._meta.concrete_fields]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(str(field.column)) for field in self.fields)
        placeholders = ", ".join(["%s"] * len(self.fields))
        table = quote(Event._meta.db_table)
        # Only our own model's names, quoted by the backend; every value is a parameter.
        self.sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608

        self.attnames = [field.attname for field in self.fields]
        # The values that need their field's adaptation (sql.column_value), decided once.
        self.adapted = [
            (index, field) for index, field in enumerate(self.fields) if not sql.is_plain(field)
        ]

    def insert(self, event: Event) -> None:
        connection = connections[self.using]
        state = event.__dict__
        values = [state[attname] for attname in self.attnames]
        for index, field in self.adapted:
            values[index] = sql.column_value(field, event, connection)
        sql.execute_on_kept_cursor(connection, self.sql, values)
        event._state.adding = False
        event._state.db = self.using


_lock = threading.Lock()
_readers: dict[tuple[type[models.Model], tuple[str, ...], str], StoredRowReader | None] = {}
_inserters: dict[str, EventInserter] = {}
_queries: dict[tuple[str, str], CompiledQuery | None] = {}


def read_stored_row(
    model: type[models.Model], pk: Any, field_names: tuple[str, ...], using: str
) -> models.Model | None:
    """The row as stored now (only ``field_names`` loaded; all when empty), or None."""
    key = (model, field_names, using)
    reader: StoredRowReader | bool | None = _readers.get(key, False)
    if reader is False:
        with _lock:
            try:
                reader = StoredRowReader(model, field_names, using)
            except _Unprepared:
                reader = None
            _readers[key] = reader
    if not isinstance(reader, StoredRowReader):
        queryset = model._base_manager.using(using).filter(pk=pk).order_by()
        if field_names:
            queryset = queryset.only(*field_names)
        return queryset.first()
    return reader.read(pk)


def insert_event(event: Event, using: str) -> None:
    inserter = _inserters.get(using)
    if inserter is None:
        with _lock:
            inserter = _inserters.setdefault(using, EventInserter(using))
    inserter.insert(event)


def instances(
    name: str, using: str, queryset: Callable[[str], models.QuerySet[Any]]
) -> list[models.Model]:
    """The instances ``queryset(using)`` returns now; its SQL is compiled on the first call
    for ``name`` and ``using`` only, so the queryset must not depend on anything else."""
    key = (name, using)
    query: CompiledQuery | bool | None = _queries.get(key, False)
    if query is False:
        with _lock:
            try:
                query = CompiledQuery(queryset(using))
            except _Unprepared:
                query = None
            _queries[key] = query
    if not isinstance(query, CompiledQuery):
        return list(queryset(using))
    return query.instances()


def forget() -> None:
    """Drop the compiled statements (models or settings changed, as in tests)."""
    with _lock:
        _readers.clear()
        _inserters.clear()
        _queries.clear()
