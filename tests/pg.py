"""A throwaway PostgreSQL server for tests.

``pg_dsn`` (a pytest fixture; import it into a test module) yields the DSN of a fresh,
empty database on a private server. The server is started once per test process from
Debian's binaries (``/usr/lib/postgresql/<ver>/bin``: ``initdb`` + ``pg_ctl``) in a temp
dir, listening on 127.0.0.1 on a free port with trust auth and fsync off, and stopped at
interpreter exit. PostgreSQL refuses to run as root, so under root the server runs as
the ``postgres`` system user when it exists (Debian's ``postgresql`` package creates it),
else as ``nobody``, via ``runuser``.

Without the binaries (or psycopg) the test is skipped with the reason, except under
``CI=true``, where it fails: CI must install ``postgresql`` (and ``psycopg[binary]``).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest


def _pg_bindir() -> str | None:
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
    )
    for d in reversed(dirs):
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


class PgServer:
    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = _free_port()
        self.tmp = tempfile.mkdtemp(prefix="fastgw-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
                break
            else:
                raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL")
        os.chmod(self.tmp, 0o700)
        self.log = os.path.join(self.tmp, "server.log")

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.tmp)
        if r.returncode != 0:
            log = ""
            if os.path.exists(self.log):
                with open(self.log) as f:
                    log = f.read()[-2000:]
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr[-2000:]}\n{log}")

    def start(self) -> None:
        b = self.bindir
        self._run(f"{b}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(f"{b}/pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"


_server: PgServer | None = None
_error: str | None = None


def server() -> PgServer:
    """The process-wide server, started on first use (skips/fails the test if impossible)."""
    global _server, _error
    if _server is not None:
        return _server
    if _error is not None:
        _unavailable(_error)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _error = "psycopg is not installed (pip install 'psycopg[binary]')"
        _unavailable(_error)
    bindir = _pg_bindir()
    if bindir is None:
        _error = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        _unavailable(_error)
    assert bindir is not None
    srv = PgServer(bindir)
    try:
        srv.start()
    except Exception as e:
        srv.stop()
        _error = f"could not start PostgreSQL: {e}"
        pytest.fail(_error, pytrace=False)
    atexit.register(srv.stop)
    _server = srv
    return srv


def create_database() -> str:
    """A fresh database on the shared server; returns its DSN."""
    import psycopg

    srv = server()
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(srv.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return srv.dsn(name)


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    yield create_database()
