"""Alembic migrations of the champions registry (env.py + versions/), shipped inside the package
so ``Registry`` can upgrade a database from an installed wheel without an alembic.ini."""
