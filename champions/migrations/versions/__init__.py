"""Registry schema revisions, oldest first (alembic skips this file)."""
