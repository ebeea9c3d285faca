"""A real PostgreSQL server for the tests, on loopback, and the back-end fixtures.

``make test`` installs Debian's ``postgresql`` (``make postgres``); the
session-scoped :func:`pg_server` then runs its own throw-away cluster: data
and socket directories in a fresh temporary directory owned by ``postgres``
(``initdb`` refuses to run as root, so as root both commands run through
``runuser -u postgres``), ``listen_addresses=127.0.0.1`` on a free port,
``fsync=off``, trust authentication (loopback only). It is stopped and
deleted at the end of the session. Without the binaries (a developer machine
without PostgreSQL) the PostgreSQL cases are skipped with the reason; the
SQLite cases run as ever.

Fixtures:

* ``pg_url``: a fresh database (``CREATE DATABASE t_<uuid>``) per test, as a
  SQLAlchemy URL ``postgresql+psycopg://postgres@127.0.0.1:PORT/t_...``.
* ``db_url`` (per test) and ``module_db_url`` (per module, for indexes built
  once per module): parametrised over ``sqlite`` and ``postgresql``; ``None``
  for SQLite (the index's own ``frozenlens.db``, the default) or a fresh
  PostgreSQL database URL. Pass it as ``Engine.open(..., database_url=...)``
  or ``--database-url``.
* ``store_url``: ``db_url`` made concrete for tests that open a
  :class:`~frozenlens.store.Store` directly (a SQLite file in ``tmp_path``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ("sqlite", "postgresql")
#: where Debian's `postgresql` package puts the server binaries (newest version wins)
BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"
DB_USER = "postgres"


def find_bindir() -> Path | None:
    found = sorted(glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="frozenlens-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, DB_USER, DB_USER)

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", DB_USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "--auth=trust", f"--username={DB_USER}", "--encoding=UTF8",
                  "--no-locale", "--no-sync")
        for attempt in range(3):  # the free port may be taken between the probe and the start
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off -c synchronous_commit=off "
                       f"-c full_page_writes=off -c unix_socket_directories={self.root} -c max_connections=300")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                          "-o", options, "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres", autocommit=True) as c:
            c.execute(sql)

    def create_database(self) -> str:
        """A fresh, empty database → its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop it, ending the sessions a test left open (engines it did not close)."""
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL server binaries not found ({BIN_GLOB}); `make postgres` installs Debian's postgresql")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[dev]'")
    server = PgServer(bindir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@contextlib.contextmanager
def _database(request: pytest.FixtureRequest) -> Iterator[str]:
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def pg_url(request) -> Iterator[str]:
    with _database(request) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with _database(request) as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with _database(request) as url:
        yield url


@pytest.fixture
def store_url(db_url, tmp_path) -> str:
    return db_url or f"sqlite:///{tmp_path / 'db.sqlite'}"
