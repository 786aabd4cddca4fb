"""Champions in the MLflow model registry: one registered model per symbol and timeframe
(``emp.<SYMBOL>.<TIMEFRAME>``), one model version per promoted bundle (its artifact is the
bundle, logged to the run that bred it), and the aliases ``champion`` (live) and ``paper``.

The MLflow UI then shows which run each champion came from and which version trades now. The
registry database (``champions.registry``) stays the audit record; MLflow is the view.
mlflow is imported inside the functions: the rest of ``champions`` loads without it.
"""

from __future__ import annotations

from pathlib import Path

from champions.bundle import Bundle
from core.tracking import default_tracking_uri

ALIASES = {"live": "champion", "paper": "paper"}
ARTIFACT_DIR = "champion"


def model_name(symbol: str, timeframe: str) -> str:
    return f"emp.{symbol}.{timeframe}"


def _client(home: Path):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    uri = default_tracking_uri(home)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def run_commit(home: Path, run_id: str) -> str:
    """The git commit the run was evolved from (its MLflow tag), or "unknown"."""
    try:
        tags = _client(home).get_run(run_id).data.tags
    except Exception:  # no such run in this store (e.g. evolved with tracking off)
        return "unknown"
    return tags.get("git_commit") or tags.get("mlflow.source.git.commit") or "unknown"


def register(home: Path, run_id: str, bundle_path: Path, bundle: Bundle) -> str:
    """Log the bundle to the run and register it as a new version (or return the version that
    already holds this bundle: a repeated promotion adds none). Returns the version."""
    from mlflow.exceptions import MlflowException

    client = _client(home)
    name = model_name(bundle.symbol, bundle.timeframe)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description=f"EMP champions of {bundle.symbol}/{bundle.timeframe}: each "
                              f"version is a signed bundle; alias 'champion' trades live, "
                              f"'paper' on paper")
    found = client.search_model_versions(f"name='{name}' and tag.bundle_sha256='{bundle.sha256}'")
    if found:
        return str(found[0].version)
    where = f"{ARTIFACT_DIR}/{bundle.sha256[:16]}"  # one directory per bundle: the version's files
    client.log_artifact(run_id, str(bundle_path), where)
    mv = client.create_model_version(
        name, source=f"runs:/{run_id}/{where}", run_id=run_id,
        tags={"bundle_sha256": bundle.sha256, "bundle_file": bundle_path.name,
              "candidate": bundle.key, "key_id": bundle.key_id or "unsigned"},
        description=str(bundle.body["strategy"]["rules"])[:5000])
    return str(mv.version)


def set_alias(home: Path, symbol: str, timeframe: str, stage: str, version: str) -> None:
    _client(home).set_registered_model_alias(model_name(symbol, timeframe), ALIASES[stage],
                                             version)


def version_of(home: Path, symbol: str, timeframe: str, sha256: str) -> str | None:
    """The model version that holds the bundle with this sha256, if any."""
    found = _client(home).search_model_versions(
        f"name='{model_name(symbol, timeframe)}' and tag.bundle_sha256='{sha256}'")
    return str(found[0].version) if found else None


def drop_alias(home: Path, symbol: str, timeframe: str, stage: str, run_id: str, key: str
               ) -> None:
    """Remove the stage's alias if it names a version of this champion (run and candidate)."""
    from mlflow.exceptions import MlflowException

    client, name = _client(home), model_name(symbol, timeframe)
    try:
        mv = client.get_model_version_by_alias(name, ALIASES[stage])
    except MlflowException:  # no such alias or model: nothing to drop
        return
    if mv.run_id == run_id and mv.tags.get("candidate") == key:
        client.delete_registered_model_alias(name, ALIASES[stage])
