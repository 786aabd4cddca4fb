"""Alembic environment of the registry: runs on the connection ``Registry`` passes in.

``champions.registry.upgrade`` opens the transaction and puts its connection into
``config.attributes["connection"]`` (Alembic's connection-sharing recipe), so there is no
alembic.ini and no URL here. The version table has its own name so the registry can share a
PostgreSQL database with MLflow, which keeps its own ``alembic_version``.
"""

from __future__ import annotations

from alembic import context

from champions.registry import VERSION_TABLE


def run_migrations() -> None:
    """Online mode only: the registry always migrates a live connection."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("the registry migrations run through champions.registry.Registry")
    context.configure(connection=connection, target_metadata=None,
                      version_table=VERSION_TABLE, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


# Imported outside Alembic (the import-hygiene test imports every module), the proxy has no
# config: do nothing then.
if getattr(context, "config", None) is not None:
    run_migrations()
