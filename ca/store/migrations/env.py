"""Alembic environment: always run with a connection handed in by ca.store.db.migrate."""
from __future__ import annotations

from alembic import context

from ca.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only ca.store.db.migrate runs migrations
    raise RuntimeError("run migrations through ca.store.db.migrate(engine)")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
