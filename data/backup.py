"""Consistent snapshots of the database, taken while the app runs, and restoring them into a fresh file."""

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from data.store import Store, StoreError


def backup_path(store: Store) -> Path:
    """Return a new file name for a backup of this store: backups/<name>-<time>.duckdb beside it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return store.path.parent / "backups" / f"{store.path.stem}-{stamp}.duckdb"


def backup(store: Store, target: str | Path) -> Path:
    """Copy the whole database (tables, sequences, data) into a new DuckDB file, as one consistent snapshot.

    `COPY FROM DATABASE` reads inside one transaction, so rankings submitted meanwhile are either all in the
    snapshot or not at all. The copy is written under a temporary name and renamed when complete.
    """
    target = Path(target)
    if target.exists():
        raise StoreError(f"backup target {target} already exists; choose a new file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)
    cursor = store.cursor()
    source = cursor.execute("SELECT current_database()").fetchone()[0]
    try:
        cursor.execute(f"ATTACH '{_sql_path(partial)}' AS studio_backup")
        try:
            cursor.execute(f'COPY FROM DATABASE "{source}" TO studio_backup')
        finally:
            cursor.execute("DETACH studio_backup")
    except duckdb.Error as error:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup to {target} failed: {error}") from error
    partial.replace(target)
    return target


@dataclass(frozen=True)
class Restored:
    target: Path
    kept: Path | None  # where the replaced database now lies, if there was one


def restore(backup_file: str | Path, target: str | Path, overwrite: bool = False) -> Restored:
    """Restore a backup into `target` (the app must be stopped); return it and where the old target was kept.

    Every row of the backup is read into a new file beside the target before anything is moved, so a truncated
    or corrupt backup is refused with the target untouched. An existing target is kept as
    `<name>.before-restore` (then `.before-restore.2`, ...): a second restore never replaces the first one's copy.
    """
    backup_file, target = Path(backup_file), Path(target)
    if not backup_file.exists():
        raise StoreError(f"backup file {backup_file} does not exist")
    if target.exists():
        if backup_file.samefile(target):
            raise StoreError(f"{backup_file} is the database being restored into; name a backup file, not --db")
        if not overwrite:
            raise StoreError(f"{target} exists; pass overwrite to replace it (it is kept as .before-restore)")
        # Opening it fails while the app (or anything) holds it, and folds its write-ahead log into the file,
        # so the copy kept aside has every committed ranking.
        Store(target).close()
    staged = target.with_name(target.name + ".restoring")
    _copy_every_row(backup_file, staged)
    kept = None
    if target.exists():
        kept = _unused_name(target.with_name(target.name + ".before-restore"))
        shutil.move(target, kept)
        wal = Path(str(target) + ".wal")
        if wal.exists():
            shutil.move(wal, Path(str(kept) + ".wal"))
    staged.replace(target)
    return Restored(target, kept)


def _copy_every_row(backup_file: Path, staged: Path) -> None:
    """Copy the backup into a new file, reading every row (a truncated file fails here), and bring its schema up."""
    staged.unlink(missing_ok=True)
    connection = duckdb.connect()
    try:
        connection.execute(f"ATTACH '{_sql_path(backup_file)}' AS studio_source (READ_ONLY)")
        connection.execute(f"ATTACH '{_sql_path(staged)}' AS studio_restored")
        connection.execute("COPY FROM DATABASE studio_source TO studio_restored")
        connection.execute("DETACH studio_restored")
    except duckdb.Error as error:
        connection.close()
        staged.unlink(missing_ok=True)
        Path(str(staged) + ".wal").unlink(missing_ok=True)
        raise StoreError(f"{backup_file} is not a complete, readable backup; nothing was restored ({error})") from error
    connection.close()
    try:
        Store(staged).close()  # migrates a backup taken by an older RLHF Studio
    except StoreError:
        staged.unlink(missing_ok=True)
        raise


def _unused_name(path: Path) -> Path:
    """Return `path`, or `path.2`, `path.3`, ...: the first name not taken (nor its write-ahead log)."""
    candidate, number = path, 1
    while candidate.exists() or Path(str(candidate) + ".wal").exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def _sql_path(path: Path) -> str:
    """Return a path quoted for a SQL string literal (ATTACH takes no bound parameters)."""
    return str(path).replace("'", "''")
