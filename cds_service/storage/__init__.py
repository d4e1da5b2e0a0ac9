"""Storage for the audit trail, feedback and shown decisions: SQLAlchemy 2 and Alembic.

SQLite (embedded default, a file in the data directory) or PostgreSQL through psycopg 3
(``CDS_DATABASE_URL``). The HTTP layer reaches it as ``app.extensions["cds_store"]``; the engine
(``cds_service.engine``) never does.
"""

from cds_service.storage.store import SchemaOutOfDate, StorageError, Store

__all__ = ["SchemaOutOfDate", "StorageError", "Store"]
