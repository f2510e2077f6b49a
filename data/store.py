"""Open the DuckDB file, bring its schema up to date, and run each user action as one transaction."""

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from data.migrations import all_migrations

T = TypeVar("T")


class StoreError(Exception):
    """A database operation failed; the message says which and why. Nothing of it was written."""


class Store:
    """One DuckDB connection per process, one cursor per thread, one transaction per user action.

    DuckDB allows a single writing process per file, so the app, its background sampler and its pages share
    this object (Streamlit's `st.cache_resource`). Writes take a process-wide lock: DuckDB's snapshot isolation
    does not see a check-then-insert race (two submits of one item, two claims of one batch), so concurrent
    write transactions would both pass their checks. Reads never wait for it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection = duckdb.connect(str(path))
        except duckdb.Error as error:
            hint = ""
            if "lock" in str(error).lower():
                hint = " (another process, such as a running app, holds it: DuckDB lets one process write a file)"
            raise StoreError(f"cannot open database {path}{hint}: {error}") from error
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self.migrate()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor (DuckDB cursors must not be shared between threads)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._connection.cursor()
        return cursor

    @contextmanager
    def transaction(self):
        """Yield a cursor inside BEGIN ... COMMIT; any error rolls everything back and is raised as StoreError."""
        cursor = self.cursor()
        cursor.begin()
        try:
            yield cursor
            cursor.commit()
        except BaseException as error:
            try:
                cursor.rollback()
            except duckdb.Error:
                pass  # a failed COMMIT has already ended the transaction
            if isinstance(error, duckdb.Error):
                raise StoreError(str(error)) from error
            raise

    def write(self, action: Callable[..., T], *args, retries: int = 5, **kwargs) -> T:
        """Run `action(cursor, *args, **kwargs)` in one transaction, one writer at a time, retrying conflicts."""
        with self._write_lock:
            for attempt in range(retries + 1):
                try:
                    with self.transaction() as cursor:
                        return action(cursor, *args, **kwargs)
                except StoreError as error:
                    if "conflict" not in str(error).lower() or attempt == retries:
                        raise
                    time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def query(self, sql: str, params: list | tuple | dict = ()) -> list[tuple]:
        """Return all rows of a read-only query, values bound with `?` (or `$name` from a dict)."""
        try:
            return self.cursor().execute(sql, _bound(params)).fetchall()
        except duckdb.Error as error:
            raise StoreError(str(error)) from error

    def query_df(self, sql: str, params: list | tuple | dict = ()):
        """Return a read-only query as a pandas DataFrame."""
        try:
            return self.cursor().execute(sql, _bound(params)).df()
        except duckdb.Error as error:
            raise StoreError(str(error)) from error

    def schema_version(self) -> int:
        rows = self.query("SELECT max(version) FROM schema_version")
        return rows[0][0] or 0

    def migrate(self) -> None:
        """Apply the migrations this file has not seen yet, each in its own transaction."""
        with self.transaction() as cursor:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
            )
        current = self.schema_version()
        migrations = all_migrations()
        newest = migrations[-1].VERSION if migrations else 0
        if current > newest:
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this RLHF Studio knows ({newest}); upgrade it"
            )
        for migration in migrations:
            if migration.VERSION > current:
                with self.transaction() as cursor:
                    migration.up(cursor)
                    cursor.execute("INSERT INTO schema_version (version) VALUES (?)", [migration.VERSION])

    def checkpoint(self) -> None:
        """Flush the write-ahead log into the database file."""
        self.cursor().execute("CHECKPOINT")

    def close(self) -> None:
        self._connection.close()


def _bound(params):
    return params if isinstance(params, dict) else list(params)
