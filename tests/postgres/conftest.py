"""A real PostgreSQL server (Debian's package) on loopback for the tests: a temp data folder, a random port,
started and stopped with pg_ctl as the `postgres` user when the tests run as root. Tests skip, saying why,
when the server binaries are absent (.ci/run installs them)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "dagster.yaml"


def pg_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    bin_dir: Path
    as_user: tuple[str, ...]

    def create_database(self) -> str:
        name = f"dagster_{uuid.uuid4().hex[:10]}"
        subprocess.run([*self.as_user, str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port),
                        "-U", self.user, name], check=True, capture_output=True, timeout=60)
        return name

    def env(self, db_name: str) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads (trust auth: the password is not checked)."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": "unused-under-trust-auth", "DAGSTER_PG_DB": db_name}


class PostgresMissing(RuntimeError):
    """No server binaries (or no account to run them as root)."""


@contextmanager
def running_postgres():
    """A throwaway server: a temp data folder, a random loopback port, `pg_ctl -m fast stop` at the end."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise PostgresMissing("PostgreSQL server binaries (pg_ctl, initdb) are not installed; .ci/run installs "
                              "Debian's postgresql")
    as_user: tuple[str, ...] = ()
    data_root = Path(tempfile.mkdtemp(prefix="viscon-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresMissing("running as root and there is no `postgres` user to run the server as") from None
        os.chown(data_root, account.pw_uid, account.pw_gid)
        as_user = ("runuser", "-u", "postgres", "--")
    data, port = data_root / "data", free_port()
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, text=True,  # noqa: E731
                                       timeout=120)
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data_root / "server.log"), "-w", "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {data_root} -c max_connections=200 -c fsync=off", "start")
        yield PostgresServer(host="127.0.0.1", port=port, user="dagster", bin_dir=bin_dir, as_user=as_user)
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       check=False, capture_output=True, timeout=120)
        shutil.rmtree(data_root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    try:
        with running_postgres() as server:
            yield server
    except PostgresMissing as e:
        pytest.skip(str(e))


@pytest.fixture
def postgres_home(postgres_server, tmp_path, monkeypatch):
    """A DAGSTER_HOME holding deploy/dagster.yaml unchanged, its variables pointing at a fresh database."""
    home = tmp_path / "pg_dagster_home"
    home.mkdir()
    shutil.copy(TEMPLATE, home / "dagster.yaml")
    env = postgres_server.env(postgres_server.create_database())
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home, env
