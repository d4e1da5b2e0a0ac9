"""Alembic environment: always run from cds_service.storage.schema with a live connection.

There is no alembic.ini; ``cds-service db upgrade`` (or ``serve --upgrade-db``) drives Alembic
through its API, so the migrations ship inside the package and work after ``pip install .``.
"""

from __future__ import annotations

from alembic import context

from cds_service.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
