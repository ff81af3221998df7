"""The database's one home: schema and migrations, TimescaleDB features or
their plain-PostgreSQL equivalents, and the queries ingest and api share."""

from storage.errors import MigrationError, StorageError

__all__ = ["MigrationError", "StorageError"]
