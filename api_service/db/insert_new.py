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

from sqlalchemy import Insert, Table, bindparam, insert

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


Shape = tuple[tuple[Table, tuple[str, ...]], ...]
_statements: dict[tuple[str, Shape], list[Insert]] = {}


def _statements_for(dialect: str, shape: Shape) -> list[Insert]:
    """The statements inserting rows of this shape, built once: their values are bound
    parameters (``{index}_{column}``), so later calls skip building and compiling them."""
    if (dialect, shape) not in _statements:
        inserts = [
            insert(table).values(
                {key: bindparam(f"{index}_{key}", type_=table.c[key].type) for key in keys}
            )
            for index, (table, keys) in enumerate(shape)
        ]
        if dialect == "postgresql":
            *parents, last = inserts
            ctes = [parent.cte(f"new_{index}") for index, parent in enumerate(parents)]
            inserts = [last.add_cte(*ctes)]
        _statements[(dialect, shape)] = inserts
    return _statements[(dialect, shape)]


def insert_new(db: Database, *objects: Base) -> None:
    """Insert ``objects`` (new rows with their keys set, parents before children) all or
    none. Relationships are not followed: set foreign-key columns, not related objects."""
    rows = [row_values(obj) for obj in objects]
    shape = tuple((table, tuple(values)) for table, values in rows)
    params = {
        f"{index}_{key}": value
        for index, (_table, values) in enumerate(rows)
        for key, value in values.items()
    }
    dialect = db.engine.dialect.name
    statements = _statements_for(dialect, shape)
    if dialect == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(statements[0], params)
        return
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(statement, params)
