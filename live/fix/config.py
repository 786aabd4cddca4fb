"""Typed settings of the FIX layer (pydantic): sessions, acceptor, initiator, TLS."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from core.config import Strict
from live.fix.credentials import Credentials, load_credentials
from live.fix.errors import FixConfigError


class CredentialsSettings(Strict):
    """Where Username/Password come from: environment variable names and/or a 0600 file."""

    username_env: str | None = None
    password_env: str | None = None
    secrets_file: Path | None = None

    def load(self) -> Credentials:
        return load_credentials(username_env=self.username_env,
                                password_env=self.password_env,
                                secrets_file=self.secrets_file)


class TlsSettings(Strict):
    """Certificates for an ``ssl.SSLContext``; client side verifies the server by default."""

    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None
    verify: bool = True
    server_hostname: str | None = None

    def context(self, server: bool) -> ssl.SSLContext:
        purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
        try:
            ctx = ssl.create_default_context(purpose, cafile=self.cafile)
            if self.certfile is not None:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise FixConfigError(f"FIX TLS settings: {exc}") from None
        if not server and not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if server and self.cafile is not None and self.verify:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class SessionSettings(Strict):
    """One FIX session as this side sees it (our SenderCompID, their TargetCompID)."""

    begin_string: Literal["FIX.4.4"] = "FIX.4.4"
    sender_comp_id: str = Field(min_length=1)
    target_comp_id: str = Field(min_length=1)
    sender_sub_id: str | None = None
    target_sub_id: str | None = None
    heartbeat_interval: int = Field(30, ge=0, le=3600)
    reset_on_logon: bool = False
    store_path: Path
    store_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    credentials: CredentialsSettings | None = None
    check_latency: bool = True
    max_latency_s: float = Field(120.0, gt=0)
    logon_timeout_s: float = Field(10.0, gt=0)
    logout_timeout_s: float = Field(2.0, gt=0)
    max_message_size: int = Field(1 << 20, ge=256, le=64 << 20)
    check_user_defined_fields: bool = True
    strict_app_fields: bool = True

    @property
    def key(self) -> str:
        """The store key: ``FIX.4.4:SENDER/sub->TARGET/sub``."""
        s = self.sender_comp_id + (f"/{self.sender_sub_id}" if self.sender_sub_id else "")
        t = self.target_comp_id + (f"/{self.target_sub_id}" if self.target_sub_id else "")
        return f"{self.begin_string}:{s}->{t}"


class AcceptorSettings(Strict):
    """A listening socket serving one or more sessions (told apart by CompIDs and SubIDs)."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    sessions: list[SessionSettings] = Field(min_length=1)
    tls: TlsSettings | None = None

    @model_validator(mode="after")
    def _unique(self) -> AcceptorSettings:
        keys = [s.key for s in self.sessions]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"acceptor sessions defined twice: {sorted(dup)}")
        return self


class InitiatorSettings(Strict):
    """A connecting session with reconnect backoff (exponential, jittered, bounded)."""

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    session: SessionSettings
    tls: TlsSettings | None = None
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    reconnect_jitter: float = Field(0.2, ge=0, le=1)
    max_reconnects: int | None = Field(None, ge=0)
    connect_timeout_s: float = Field(10.0, gt=0)
