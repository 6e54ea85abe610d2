//! Opening a SQLite database the way every faultline store expects it, and migrating a
//! component's schema.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::{Migration, StoreError};

/// How long a writer waits for another connection's write transaction to end before it
/// fails with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if need be) the database at `path` in WAL mode with
/// `synchronous = FULL` (a commit returns after the WAL is fsynced) and a
/// [`BUSY_TIMEOUT`].
///
/// # Errors
///
/// [`StoreError::Sqlite`] when the file cannot be opened or is not a database.
pub fn open(path: impl AsRef<Path>) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

/// A private in-memory database with the same settings (WAL does not apply): for tests
/// and benchmarks.
///
/// # Errors
///
/// [`StoreError::Sqlite`] when SQLite cannot allocate it.
pub fn open_in_memory() -> Result<Connection, StoreError> {
    let conn = Connection::open_in_memory()?;
    configure(&conn)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // `journal_mode` answers with the mode in force (`memory` for an in-memory db).
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// Brings `component`'s schema up to date: applies, in one transaction each, the
/// migrations the database has not had yet, and records the version reached in
/// `faultline_schema`. Returns that version (`migrations.len()`).
///
/// # Errors
///
/// [`StoreError::SchemaTooNew`] when the database holds a newer version than
/// `migrations` knows; [`StoreError::Sqlite`] when a migration fails (it is rolled
/// back).
pub fn migrate(
    conn: &mut Connection,
    component: &str,
    migrations: &[Migration],
) -> Result<i64, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS faultline_schema (
             component TEXT PRIMARY KEY,
             version INTEGER NOT NULL
         )",
    )?;
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    // IMMEDIATE: two processes migrating at once take turns.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: i64 = tx
        .query_row(
            "SELECT version FROM faultline_schema WHERE component = ?1",
            [component],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    if found > known {
        return Err(StoreError::SchemaTooNew {
            component: component.to_owned(),
            found,
            known,
        });
    }
    for sql in migrations.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.execute_batch(sql)?;
    }
    tx.execute(
        "INSERT INTO faultline_schema (component, version) VALUES (?1, ?2)
         ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        rusqlite::params![component, known],
    )?;
    tx.commit()?;
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = "CREATE TABLE t (a INTEGER)";
    const V2: Migration = "ALTER TABLE t ADD COLUMN b INTEGER";

    #[test]
    fn migrations_apply_once_in_order_and_a_newer_schema_is_refused() {
        let dir = std::env::temp_dir().join(format!("faultline-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let _ = std::fs::remove_file(&path);
        let mut c = open(&path).unwrap();
        assert_eq!(migrate(&mut c, "test", &[V1]).unwrap(), 1);
        assert_eq!(
            migrate(&mut c, "test", &[V1]).unwrap(),
            1,
            "re-run is a no-op"
        );
        assert_eq!(migrate(&mut c, "test", &[V1, V2]).unwrap(), 2);
        c.execute("INSERT INTO t (a, b) VALUES (1, 2)", []).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
        let err = migrate(&mut c, "test", &[V1]).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
