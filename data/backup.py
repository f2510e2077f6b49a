"""Consistent snapshots of the database, taken while the app runs, and restoring them into a fresh file."""

import shutil
import time
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


def restore(backup_file: str | Path, target: str | Path, overwrite: bool = False) -> Path:
    """Restore a backup into `target` (the app must be stopped); an existing target is kept as `<name>.before-restore`."""
    backup_file, target = Path(backup_file), Path(target)
    if not backup_file.exists():
        raise StoreError(f"backup file {backup_file} does not exist")
    check = Store(backup_file)  # opens, migrates if it is older, and fails clearly if it is not a database
    check.close()
    if target.exists():
        if not overwrite:
            raise StoreError(f"{target} exists; pass overwrite to replace it (it is kept as .before-restore)")
        # Opening it fails while the app (or anything) holds it, and folds its write-ahead log into the file,
        # so the copy kept aside has every committed ranking.
        Store(target).close()
        kept = target.with_name(target.name + ".before-restore")
        shutil.move(target, kept)
        wal = Path(str(target) + ".wal")
        if wal.exists():
            shutil.move(wal, Path(str(kept) + ".wal"))
    shutil.copyfile(backup_file, target)
    return target


def _sql_path(path: Path) -> str:
    """Return a path quoted for a SQL string literal (ATTACH takes no bound parameters)."""
    return str(path).replace("'", "''")
