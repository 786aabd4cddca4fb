"""Logon credentials (Username 553 / Password 554) from the environment or a 0600 file.

The values live in a ``Credentials`` object whose repr, str and every error message show
``***``; the session puts them only on the Logon it writes to the socket (the stored copy
and the logs are masked).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from live.fix.errors import FixConfigError
from live.fix.message import MASK


@dataclass(frozen=True)
class Credentials:
    """Username and password; never shown in clear."""

    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        user = MASK if self.username else None
        pw = MASK if self.password else None
        return f"Credentials(username={user!r}, password={pw!r})"

    __str__ = __repr__

    @property
    def secrets(self) -> tuple[str, ...]:
        """The clear values, for log maskers."""
        return tuple(v for v in (self.username, self.password) if v)


def _read_secrets_file(path: Path) -> dict[str, str]:
    try:
        st = path.stat()
    except OSError as exc:
        raise FixConfigError(f"FIX secrets file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FixConfigError(f"FIX secrets file {path}: permissions "
                             f"{stat.S_IMODE(st.st_mode):04o}, must be 0600 (chmod 600 {path})")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise FixConfigError(f"FIX secrets file {path}:{n}: expected key=value")
        out[key.strip().lower()] = value.strip()
    unknown = set(out) - {"username", "password"}
    if unknown:
        raise FixConfigError(f"FIX secrets file {path}: unknown key(s) {sorted(unknown)}, "
                             "expected username and password")
    return out


def load_credentials(*, username_env: str | None = None, password_env: str | None = None,
                     secrets_file: str | Path | None = None,
                     environ: dict[str, str] | None = None) -> Credentials:
    """Credentials from a secrets file (``username=`` / ``password=`` lines, mode 0600)
    and/or environment variables (the environment wins for a value set in both)."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    if secrets_file is not None:
        values.update(_read_secrets_file(Path(secrets_file)))
    for key, var in (("username", username_env), ("password", password_env)):
        if var is None:
            continue
        if var not in env:
            if key not in values:
                raise FixConfigError(f"FIX credentials: environment variable {var} is not set")
            continue
        values[key] = env[var]
    return Credentials(values.get("username") or None, values.get("password") or None)
