"""Ops layer of the live executor: Prometheus metrics, the ``/health`` ``/ready`` ``/metrics``
endpoints and systemd's notify protocol (READY, WATCHDOG, STOPPING, STATUS).

Base dependencies only (prometheus-client and the standard library): this runs on the 1 GB
VPS next to the executor. The alert rules, the Grafana dashboard and the systemd unit that go
with these names live in ``configs/ops/``.
"""
