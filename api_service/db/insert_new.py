"""Insert a few new, related rows in one round trip to the database.

The ORM's unit of work sends one INSERT per row between a BEGIN and a COMMIT: five round
trips for a submitted run (plan, run, task state). On PostgreSQL the rows go instead as
one statement whose data-modifying CTEs insert the parents, run in autocommit: a single
statement is atomic, and its foreign keys are checked when the whole statement ends, so a
child may name a parent inserted beside it. SQLite cannot put an INSERT in a CTE; there
the rows go in one transaction (in-process: a round trip costs nothing).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, Table, insert

from api_service.db.base import Base, Database


def row_values(obj: Base) -> tuple[Table, dict[str, Any]]:
    """The table and full column values of a new ORM object, as a flush would insert them:
    what was set on it, and each unset column's Python-side default (also set on ``obj``,
    so the caller reads the stored values from it)."""
    table = obj.__table__
    assert isinstance(table, Table)
    values: dict[str, Any] = {}
    for column in table.columns:
        key = column.key
        if key in obj.__dict__:
            values[key] = obj.__dict__[key]
            continue
        default = column.default
        if default is None:
            continue
        if getattr(default, "is_scalar", False):
            value = default.arg
        elif getattr(default, "is_callable", False):
            value = default.arg(None)
        else:  # a SQL expression or sequence: left to the database
            continue
        values[key] = value
        setattr(obj, key, value)
    return table, values


def insert_new(db: Database, *objects: Base) -> None:
    """Insert ``objects`` (new rows with their keys set, parents before children) all or
    none. Relationships are not followed: set foreign-key columns, not related objects."""
    inserts = [insert(table).values(values) for table, values in map(row_values, objects)]
    if db.engine.dialect.name == "postgresql":
        *parents, last = inserts
        statement: Insert = last.add_cte(
            *(parent.cte(f"new_{index}") for index, parent in enumerate(parents))
        )
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(statement)
        return
    with db.engine.begin() as conn:
        for one in inserts:
            conn.execute(one)
