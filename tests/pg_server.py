"""A throwaway PostgreSQL server for the registry tests: initdb into a temp dir, start on
127.0.0.1 with a free port and password authentication, one fresh database per test, stop and
delete at the end.

PostgreSQL refuses to run as root, so as root (CI) the server binaries run as the ``postgres``
system user of the Debian package through ``runuser``. Missing binaries fail the tests with the
install command; ``EMP_SKIP_POSTGRES=1`` (explicitly) skips them instead.
"""

from __future__ import annotations

import glob
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = ("PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and "
                "PATH): install them with `make sysdeps` (as root) or `apt-get install -y postgresql`, "
                "or set EMP_SKIP_POSTGRES=1 to skip the PostgreSQL tests")
USER = "postgres"


def find_bindir() -> Path | None:
    """``$EMP_PG_BINDIR``, else the newest Debian cluster version, else ``pg_ctl`` on PATH."""
    env = os.environ.get("EMP_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "pg_ctl").exists() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgServer:
    """One running server; ``new_url()`` creates an empty database and returns its URL."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="emp-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.password = "pw-" + secrets.token_hex(8)  # tests check it never leaks
        self.port = free_port()
        self._names = itertools.count(1)
        self.started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root,
                              env={**os.environ, "PGPASSWORD": self.password})
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}\n{log}")
        return proc

    def start(self) -> None:
        self.sockets.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(self.root, USER)
            for path in (self.sockets, pwfile):
                shutil.chown(path, USER)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off "
                        "-c full_page_writes=off -c synchronous_commit=off", "start")
        self.started = True

    def new_url(self) -> str:
        name = f"emp_test_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return self.url(name)

    def url(self, database: str, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{USER}:{pw}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's server (fails with the install command when PostgreSQL is missing)."""
    if os.environ.get("EMP_SKIP_POSTGRES") == "1":
        pytest.skip("EMP_SKIP_POSTGRES=1: PostgreSQL tests skipped on request")
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh empty database on the session's server."""
    return pg_server.new_url()
