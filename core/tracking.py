"""Where MLflow keeps the runs: evolution creates them, the gates add their verdict to them.

Only the location lives here (no mlflow import), so every package that talks to MLflow finds
the same store. Print it only through ``display_uri``: a shared server's URI may carry a
password (``http://user:password@host``).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.secrets import mask_uri


def default_tracking_uri(home: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set (shared server), else a sqlite store inside the EMP home.

    Also turns off MLflow's own "View run at: URL" lines (unless the user set
    ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``): MLflow writes them to stdout with the URI's
    credentials in clear; EMP prints its own, masked, links (``run_links``).
    """
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home.resolve()}/mlflow.db"


def display_uri(uri: str) -> str:
    """The tracking URI as it may be printed or logged: credentials masked."""
    return mask_uri(uri) or ""


def how_to_open(uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """One line telling the user where to look: the server's page for an http(s) store (masked),
    else the ``mlflow ui`` command for a local store."""
    shown = display_uri(uri)
    if uri.startswith(("http://", "https://")):
        page = shown.rstrip("/")
        if experiment_id is not None:
            page += f"/#/experiments/{experiment_id}"
            if run_id is not None:
                page += f"/runs/{run_id}"
        return page
    return f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {shown}"
