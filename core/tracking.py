"""Where MLflow keeps the runs: evolution creates them, the gates add their verdict to them.

Only the location lives here (no mlflow import), so every package that talks to MLflow finds
the same store.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_tracking_uri(home: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set (shared server), else a sqlite store inside the EMP home."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home.resolve()}/mlflow.db"
