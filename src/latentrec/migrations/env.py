"""Alembic's environment for latentrec's schema.

`Store.upgrade` runs it with an open connection in `config.attributes["connection"]`, inside a
transaction of its own. The `alembic` command (for writing a new revision) may instead give the
URL as the `sqlalchemy.url` option.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as opened:
        context.configure(connection=opened, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
