"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, start ``postgres`` on
127.0.0.1 at a free port with password authentication, stop and delete it at the end.

PostgreSQL refuses to run as root, so under root the server (and initdb) run as the unprivileged
``nobody`` user through ``runuser``; as a normal user they run as that user. Binaries are found with
``pg_config --bindir`` or under /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "mmsearch"
PASSWORD = "s3cret-pw-for-tests"


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None when the server is not installed."""
    candidates: list[str] = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in candidates:
        if all(Path(folder, tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    as_nobody: bool

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_nobody:
            cmd = ["runuser", "-u", "nobody", "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120, **kwargs)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
        if self.as_nobody:
            shutil.chown(self.root, "nobody")
            shutil.chown(pwfile, "nobody")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return (self.root / "log").read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return ""


def start_server(bindir: Path) -> PgServer:
    """Start a fresh server; the caller stops it. The folder is outside pytest's 0700 temp tree so that
    ``nobody`` can reach it when the tests run as root."""
    root = Path(tempfile.mkdtemp(prefix="mmsearch-pg-"))
    server = PgServer(bindir, root, _free_port(), as_nobody=os.geteuid() == 0)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        detail = f"{exc.cmd[-1] if exc.cmd else ''}: {exc.stderr or exc.stdout}\n{server.log_tail()}"
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL from {bindir}: {detail}") from exc
    return server


def create_database(server: PgServer, name: str) -> str:
    """A new empty database on ``server`` -> its SQLAlchemy URL."""
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=server.port, user=SUPERUSER, password=PASSWORD, dbname="postgres",
                                 autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            return server.url(name)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
