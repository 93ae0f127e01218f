"""The database schema's Alembic migrations; `latentrec db upgrade` runs them."""
