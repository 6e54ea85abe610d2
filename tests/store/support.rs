//! What the store tests share: a fresh SQLite file, a fresh Postgres database.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use faultline::store::postgres::TestServer;

static NEXT: AtomicU32 = AtomicU32::new(0);
static SKIP_SAID: Once = Once::new();

/// A directory of its own under the temp dir, emptied.
pub fn temp_dir(what: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("faultline-store-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A path for a new SQLite database file.
pub fn sqlite_path(what: &str) -> PathBuf {
    temp_dir(what).join("db.sqlite")
}

/// The URL of a fresh Postgres database, or `None` (after saying once, past the test
/// harness's capture, that the Postgres tests did not run and how to run them). Panics
/// when `FAULTLINE_REQUIRE_PG` is set and there is no server.
pub fn pg_url(what: &str) -> Option<String> {
    match TestServer::shared() {
        Ok(Some(server)) => Some(server.fresh_database().expect("fresh postgres database")),
        Ok(None) => {
            SKIP_SAID.call_once(|| {
                // Straight to the file descriptor: libtest captures `eprintln!`.
                let _ = writeln!(std::io::stderr(), "{}", TestServer::skip_line(what));
            });
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// The read side of a `JobStore` wrapper whose store is `self.inner`, forwarded
/// unchanged: the broken stores override only the commands they break.
macro_rules! forward_reads {
    () => {
        fn visibility_timeout(&self) -> std::time::Duration {
            self.inner.visibility_timeout()
        }
        fn origin(
            &mut self,
            p: faultline::clock::Origin,
        ) -> Result<faultline::clock::Origin, faultline::store::StoreError> {
            self.inner.origin(p)
        }
        fn redrive(
            &mut self,
            now: faultline::clock::Instant,
        ) -> Result<usize, faultline::store::StoreError> {
            self.inner.redrive(now)
        }
        fn counts(
            &mut self,
        ) -> Result<faultline::queue::QueueCounts, faultline::store::StoreError> {
            self.inner.counts()
        }
        fn dead_letters(
            &mut self,
        ) -> Result<Vec<faultline::queue::DeadLetter>, faultline::store::StoreError> {
            self.inner.dead_letters()
        }
        fn next_due(
            &mut self,
        ) -> Result<Option<faultline::clock::Instant>, faultline::store::StoreError> {
            self.inner.next_due()
        }
    };
}
