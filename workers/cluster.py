"""Joining a Ray cluster, or starting a small embedded one, from one call.

``connect`` is idempotent so library code (pools, the evolution driver, tests) can call it freely
without caring who started Ray. A cluster is joined when ``address`` or ``RAY_ADDRESS`` names one
(e.g. under ``ray job submit``); otherwise a quiet local Ray is started in-process and remembered
as *embedded*, so ``shutdown`` only ever tears down a Ray that this module started.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

_embedded = False


def _describe() -> dict[str, Any]:
    res = ray.cluster_resources()
    return {"address": ray.get_runtime_context().gcs_address,
            "cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0)),
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "embedded": _embedded}


def connect(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Join ``address`` / ``RAY_ADDRESS`` if set, else start an embedded local Ray; describe it.

    ``num_cpus`` only applies to the embedded case (default: every local CPU); a joined cluster
    has its own resources.
    """
    global _embedded
    if ray.is_initialized():
        return _describe()
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True,
             "configure_logging": True}
    if address:
        ray.init(address=address, **quiet)
        _embedded = False
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster needs no token
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
        _embedded = True
    return _describe()


def shutdown() -> None:
    """Disconnect from Ray: an embedded cluster stops with it, a joined one keeps running."""
    global _embedded
    if ray.is_initialized():
        ray.shutdown()
    _embedded = False
