"""The Event rows of an open transaction, written together just before anyone could see them.

In autocommit a watched save's Event is inserted at once (one statement, its own
transaction). Inside a transaction it waits here, and all the transaction's events go in
together at the first moment the database could show them to anyone:

* before the commit (so they commit with the caller's change, or not at all: the outbox);
* before any statement of this connection that names one of our tables (so a query in the
  same transaction, ``Event.objects.filter(...)`` or a test's assertion, sees them);
* before a savepoint is set, released or rolled back to (so rolling back to a savepoint
  removes exactly the events recorded after it, as the database does with every row), and
  before a COMMIT, ROLLBACK, BEGIN or END sent as SQL.

A rollback of the transaction drops them, and so does closing the connection mid-transaction
(the database rolls back). 1,000 saves in one transaction then cost one COPY
of 1,000 rows on PostgreSQL (multi-row INSERTs of 100 on SQLite) instead of 1,000 round
trips (docs/benchmarks.md).

Django has no hook before a commit (``on_commit`` runs after it, too late for an outbox), so
while a connection holds events its ``commit``, ``rollback`` and ``close`` are wrapped on that
one connection object, and an execute wrapper (Django's documented ``execute_wrapper`` list)
sees its statements; all of it is removed again once the events are written or dropped, so a
connection without pending events runs exactly as Django's own. Statements sent on the
DB-API connection directly (``connection.connection.cursor()``) bypass Django and see no
pending events.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.db import DatabaseError, connections
from django.db.transaction import TransactionManagementError

from webhooks_app import sql, statements
from webhooks_app.models import Event

_PENDING = "_webhooks_outbox"


class _Pending:
    """One connection's unwritten events and the hooks installed for them."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        # The DB-API connection the transaction runs on: if it was closed and reopened, the
        # transaction (and these events) are gone with it.
        self.raw = connection.connection
        self.events: list[Event] = []
        self.wrapper = functools.partial(_before_statement, self)
        self.commit = connection.commit
        self.rollback = connection.rollback
        self.close = connection.close

    def install(self) -> None:
        connection = self.connection
        # At the front: execute_wrapper() blocks opened meanwhile pop() from the end, and must
        # pop their own wrapper, never this one.
        connection.execute_wrappers.insert(0, self.wrapper)
        connection.commit = self.write_then_commit
        connection.rollback = self.drop_then_rollback
        connection.close = self.drop_then_close
        setattr(connection, _PENDING, self)

    def uninstall(self) -> None:
        connection = self.connection
        if self.wrapper in connection.execute_wrappers:
            connection.execute_wrappers.remove(self.wrapper)
        # The instance attributes shadowed the class's methods: removing them restores those.
        for name in ("commit", "rollback", "close", _PENDING):
            connection.__dict__.pop(name, None)

    def write(self) -> None:
        """Insert the events (unless their transaction is gone) and stop watching."""
        self.uninstall()
        events, self.events = self.events, []
        if events and self.connection.connection is self.raw:
            sql.copy(self.connection.alias, events)

    def write_then_commit(self) -> None:
        try:
            self.write()
        except DatabaseError:
            raise  # Atomic (or whoever called commit()) rolls the transaction back
        except BaseException:
            # Interrupted mid-write (KeyboardInterrupt, a worker's time limit): Atomic would
            # not roll back, and turning autocommit on again would commit SQLite's open
            # transaction without its events. So roll back here.
            with contextlib.suppress(Exception):
                self.rollback()
            raise
        self.commit()

    def drop_then_rollback(self) -> None:
        try:
            self.rollback()
        except TransactionManagementError:
            raise  # refused (inside an atomic block): nothing rolled back, the events stay
        except BaseException:
            self.uninstall()  # the rollback itself failed: the transaction is gone anyway
            raise
        self.uninstall()

    def drop_then_close(self) -> None:
        # Closed mid-transaction, the database rolls back. A pool may hand the same DB-API
        # connection out again, so the events must not outlive this close.
        self.uninstall()
        self.close()


def add(event: Event, using: str) -> None:
    """Write ``event`` in the caller's transaction: now in autocommit, else with the
    transaction's other events before they could be seen (see the module docstring)."""
    connection = connections[using]
    if connection.get_autocommit():
        statements.insert_event(event, using)
        return
    pending: _Pending | None = connection.__dict__.get(_PENDING)
    if pending is not None and pending.raw is not connection.connection:
        pending.uninstall()  # left from a connection that was closed mid-transaction
        pending = None
    if pending is None:
        pending = _Pending(connection)
        pending.install()
    event._state.adding = False
    event._state.db = using
    pending.events.append(event)


def _before_statement(
    pending: _Pending,
    execute: Callable[..., Any],
    sql: str,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    if could_see_events(str(sql)):
        pending.write()
    return execute(sql, params, many, context)


_TRANSACTION_STATEMENTS = ("commit", "rollback", "end", "begin")


def could_see_events(sql: str) -> bool:
    """Whether a statement must find the transaction's events written: it names one of our
    tables, sets, releases or rolls back to a savepoint, or is a COMMIT, ROLLBACK, END or
    BEGIN sent as SQL (writing first is right for each, as the database then keeps or drops
    the events with the rest). It runs before every statement of a transaction holding
    events, so it is substring tests on the lowered text (a regular expression of the same
    took ~20 µs a statement); a false "yes" only writes the events earlier, which is always
    correct."""
    text = sql.lower()
    if "savepoint" in text or text.lstrip().startswith(_TRANSACTION_STATEMENTS):
        return True
    return any(table in text for table in _our_tables())


@functools.cache
def _our_tables() -> tuple[str, ...]:
    tables = {
        model._meta.db_table.lower() for model in apps.get_app_config("webhooks_app").get_models()
    }
    # A name that contains another ("..._deliveryattempt", "..._delivery") is found by it.
    return tuple(
        sorted(table for table in tables if not any(other in table for other in tables - {table}))
    )
