"""Exceptions of the storage layer; callers translate them at their edge."""


class StorageError(Exception):
    """A database operation failed in a way the caller should report."""


class MigrationError(StorageError):
    """The schema could not be brought up to date."""
