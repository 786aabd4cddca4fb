"""Credentials never reach a terminal or a log: every URI EMP prints or logs goes through here.

``MLFLOW_TRACKING_URI=http://user:password@host`` or ``RAY_ADDRESS`` with a token are normal
ways to reach a shared server; the password must not end up in a job log, a screenshot or a
bug report. ``mask_uri`` masks one URI; ``mask_text`` every URI inside a message (MLflow and
Ray put URIs in their exceptions and log lines); ``install_log_masking`` applies ``mask_text``
to every log record of the process, whoever creates it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "***"
_SECRET_PARAM = re.compile(r"pass|secret|token|key|auth|sig|credential", re.IGNORECASE)
# scheme://userinfo@ : the userinfo is everything up to the last '@' before the host part
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^\s/@?#]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[^=&#\s]*(?:pass|secret|token|key|auth|sig|credential)[^=&#\s]*)=)"
    r"(?P<value>[^&#\s'\"]+)", re.IGNORECASE)


def _mask_info(info: str) -> str:
    """``user:pw`` -> ``user:***``; a bare ``token`` (no colon) is a credential too -> ``***``."""
    user, sep, _ = info.partition(":")
    return f"{user}:{MASK}" if sep else MASK


def mask_uri(uri: str | None) -> str | None:
    """``http://user:password@host/x?token=t`` -> ``http://user:***@host/x?token=***``.

    A URI without credentials comes back unchanged (``sqlite:////abs/path.db`` included)."""
    if not uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # not parseable as a URI: mask what looks like one inside it
        return mask_text(uri)
    netloc = parts.netloc
    if "@" in netloc:
        info, _, host = netloc.rpartition("@")
        netloc = f"{_mask_info(info)}@{host}"
    query = parts.query
    if query and any(_SECRET_PARAM.search(k) for k, _ in parse_qsl(query, keep_blank_values=True)):
        query = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, "?" + query)[1:]
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str) -> str:
    """Every ``scheme://user:pw@`` and secret-looking query value inside free text, masked."""
    if "://" not in text and "=" not in text:
        return text
    out = _USERINFO.sub(lambda m: m.group("scheme") + _mask_info(m.group("info")) + "@", text)
    return _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, out)


_installed = False


def install_log_masking() -> None:
    """Mask URIs in every log record created from now on, in this process (idempotent).

    A record factory, not a handler filter: third-party libraries (MLflow, alembic, Ray)
    install their own handlers, and a factory sees every record before any handler does.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return record
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
