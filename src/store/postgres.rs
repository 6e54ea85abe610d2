//! Connecting to Postgres, migrating a component's schema, and a throwaway local
//! server for tests ([`TestServer`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::{Migration, StoreError};

/// Connects to the server at `url` (a libpq connection string or URL, e.g.
/// `postgres://user@localhost:5432/db` or `host=localhost user=me dbname=db`), without
/// TLS.
///
/// # Errors
///
/// [`StoreError::Postgres`] when the URL is malformed or the server cannot be reached.
pub fn connect(url: &str) -> Result<Client, StoreError> {
    Ok(Client::connect(url, NoTls)?)
}

/// Brings `component`'s schema up to date: applies the migrations the database has not
/// had yet in one transaction, under an advisory lock so that workers starting together
/// migrate once, and records the version reached in `faultline_schema`. Returns that
/// version (`migrations.len()`).
///
/// # Errors
///
/// [`StoreError::SchemaTooNew`] when the database holds a newer version than
/// `migrations` knows; [`StoreError::Postgres`] when a migration fails (it is rolled
/// back).
pub fn migrate(
    client: &mut Client,
    component: &str,
    migrations: &[Migration],
) -> Result<i64, StoreError> {
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    let mut tx = client.transaction()?;
    // One key for every faultline migration: schema changes are rare and short.
    tx.execute("SELECT pg_advisory_xact_lock(7046546)", &[])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS faultline_schema (
             component TEXT PRIMARY KEY,
             version BIGINT NOT NULL
         )",
    )?;
    let found: i64 = tx
        .query_opt(
            "SELECT version FROM faultline_schema WHERE component = $1",
            &[&component],
        )?
        .map_or(0, |r| r.get(0));
    if found > known {
        return Err(StoreError::SchemaTooNew {
            component: component.to_owned(),
            found,
            known,
        });
    }
    for sql in migrations.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(sql)?;
    }
    tx.execute(
        "INSERT INTO faultline_schema (component, version) VALUES ($1, $2)
         ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        &[&component, &known],
    )?;
    tx.commit()?;
    Ok(known)
}

/// The environment variable naming a Postgres server the tests use instead of starting
/// their own (a connection URL; the tests create their databases on it).
pub const URL_VAR: &str = "FAULTLINE_PG_URL";

/// The environment variable that makes a missing Postgres an error instead of a skip
/// (`.ci/run` sets it, so the Postgres tests cannot silently not run).
pub const REQUIRE_VAR: &str = "FAULTLINE_REQUIRE_PG";

/// A Postgres server for tests: either the one [`URL_VAR`] names, or a throwaway
/// server started from the local binaries (`initdb`, `pg_ctl`: Debian's
/// `/usr/lib/postgresql/*/bin`, or on `PATH`) with a temporary data directory, on a
/// free localhost port, stopped and deleted when the value is dropped or, should the
/// process die first, by a watchdog that outlives it.
///
/// Each test takes a fresh database of its own ([`fresh_database`](Self::fresh_database)),
/// so tests run in parallel on one server.
#[derive(Debug)]
pub struct TestServer {
    /// The URL of the server's maintenance database (`postgres`).
    admin_url: String,
    /// For a server this value started: its binaries and data directory.
    owned: Option<Owned>,
}

#[derive(Debug)]
struct Owned {
    bin: PathBuf,
    dir: PathBuf,
    user: Option<String>,
}

static SHARED: OnceLock<Result<Option<TestServer>, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestServer {
    /// The server every test of this process shares, started on first use: `Ok(None)`
    /// when there is neither [`URL_VAR`] nor local Postgres binaries (the caller skips,
    /// saying so), unless [`REQUIRE_VAR`] is set, which makes that an error.
    ///
    /// # Errors
    ///
    /// [`StoreError::TestServer`] when a server was expected but could not be started
    /// or reached.
    pub fn shared() -> Result<Option<&'static TestServer>, StoreError> {
        let found = SHARED.get_or_init(|| TestServer::start().map_err(|e| e.to_string()));
        match found {
            Ok(Some(s)) => Ok(Some(s)),
            Ok(None) if std::env::var_os(REQUIRE_VAR).is_some() => {
                Err(StoreError::TestServer(format!(
                    "{REQUIRE_VAR} is set but there is no Postgres: set {URL_VAR} or install the server binaries (Debian: apt-get install postgresql)"
                )))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::TestServer(e.clone())),
        }
    }

    /// A server of its own: the one [`URL_VAR`] names, or a throwaway one; `Ok(None)`
    /// when there is neither.
    ///
    /// # Errors
    ///
    /// [`StoreError::TestServer`] when the server cannot be started or reached.
    pub fn start() -> Result<Option<TestServer>, StoreError> {
        if let Ok(url) = std::env::var(URL_VAR) {
            let server = TestServer {
                admin_url: url,
                owned: None,
            };
            connect(&server.admin_url)
                .map_err(|e| StoreError::TestServer(format!("{URL_VAR}: {e}")))?;
            return Ok(Some(server));
        }
        let Some(bin) = find_binaries() else {
            return Ok(None);
        };
        start_local(bin).map(Some)
    }

    /// One line for a test that skipped because there is no Postgres, saying how to run
    /// it.
    pub fn skip_line(what: &str) -> String {
        format!(
            "postgres tests skipped ({what}): no server. Install Postgres (Debian: apt-get install postgresql) so the tests start a throwaway one, or set {URL_VAR}=postgres://...; {REQUIRE_VAR}=1 makes this an error"
        )
    }

    /// Creates an empty database of its own and returns its URL.
    ///
    /// # Errors
    ///
    /// [`StoreError::Postgres`] when the server refuses.
    pub fn fresh_database(&self) -> Result<String, StoreError> {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let name = format!("faultline_{}_{n}", std::process::id());
        let mut admin = connect(&self.admin_url)?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(with_dbname(&self.admin_url, &name))
    }

    /// The URL of the server's maintenance database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(o) = &self.owned {
            stop(o);
        }
    }
}

/// `url` with its database replaced by `name`. A URL (`postgres://…/db?opts`) or a
/// key-value string (`host=… dbname=…`).
fn with_dbname(url: &str, name: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = before_query
            .split_once('/')
            .map_or(before_query, |(a, _)| a);
        let mut out = format!("{scheme}{authority}/{name}");
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        format!("{} dbname={name}", kept.join(" "))
    }
}

fn find_binaries() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// Whether this process runs as root (initdb refuses to): read from `/proc`.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn command_as(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(u).arg("--").arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run(mut c: Command, what: &str) -> Result<(), StoreError> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| StoreError::TestServer(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(StoreError::TestServer(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

fn free_port() -> Result<u16, StoreError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn start_local(bin: PathBuf) -> Result<TestServer, StoreError> {
    let dir = std::env::temp_dir().join(format!(
        "faultline-pg-{}-{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // initdb refuses to run as root: run the server as Debian's `postgres` user.
    let user = running_as_root().then(|| "postgres".to_owned());
    if let Some(u) = &user {
        let mut c = Command::new("chown");
        c.arg(format!("{u}:")).arg(&dir);
        run(c, "chown of the data directory")?;
    }
    let data = dir.join("data");
    let mut init = command_as(user.as_deref(), &bin.join("initdb"));
    init.arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
    run(init, "initdb")?;
    let port = free_port()?;
    let owned = Owned {
        bin: bin.clone(),
        dir: dir.clone(),
        user: user.clone(),
    };
    let mut start = command_as(user.as_deref(), &bin.join("pg_ctl"));
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on",
            dir.display()
        ))
        .args(["-w", "-t", "60", "start"]);
    if let Err(e) = run(start, "pg_ctl start") {
        stop(&owned);
        return Err(e);
    }
    watchdog(&owned);
    let server = TestServer {
        admin_url: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        owned: Some(owned),
    };
    // The server accepts connections once `pg_ctl -w` returns; check anyway.
    let mut last = None;
    for _ in 0..50 {
        match connect(&server.admin_url) {
            Ok(_) => return Ok(server),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(StoreError::TestServer(format!(
        "the server started but refuses connections: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )))
}

/// A shell that waits for this process to end, then stops the server and deletes its
/// directory: a test process killed, or one whose shared server is never dropped, leaves
/// nothing behind.
fn watchdog(o: &Owned) {
    let pg_ctl = o.bin.join("pg_ctl");
    let data = o.dir.join("data");
    let stop = match &o.user {
        Some(u) => format!(
            "runuser -u {u} -- '{}' -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        ),
        None => format!(
            "'{}' -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        ),
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = o.dir.display()
    );
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn stop(o: &Owned) {
    let mut c = command_as(o.user.as_deref(), &o.bin.join("pg_ctl"));
    c.arg("-D")
        .arg(o.dir.join("data"))
        .args(["-m", "immediate", "stop"]);
    let _ = run(c, "pg_ctl stop");
    let _ = std::fs::remove_dir_all(&o.dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbname_is_replaced_in_urls_and_key_value_strings() {
        assert_eq!(
            with_dbname("postgres://u:p@h:5/old?sslmode=disable", "new"),
            "postgres://u:p@h:5/new?sslmode=disable"
        );
        assert_eq!(with_dbname("postgresql://h", "n"), "postgresql://h/n");
        assert_eq!(
            with_dbname("host=h port=5 dbname=old user=u", "n"),
            "host=h port=5 user=u dbname=n"
        );
    }

    #[test]
    fn a_throwaway_server_starts_migrates_and_stops() {
        let server = match TestServer::shared() {
            Ok(Some(s)) => s,
            Ok(None) => {
                eprintln!("{}", TestServer::skip_line("store::postgres"));
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let url = server.fresh_database().unwrap();
        let mut c = connect(&url).unwrap();
        let m: [Migration; 2] = ["CREATE TABLE t (a INT)", "ALTER TABLE t ADD COLUMN b INT"];
        assert_eq!(migrate(&mut c, "test", &m[..1]).unwrap(), 1);
        assert_eq!(migrate(&mut c, "test", &m).unwrap(), 2);
        assert_eq!(migrate(&mut c, "test", &m).unwrap(), 2);
        c.execute("INSERT INTO t (a, b) VALUES (1, 2)", &[])
            .unwrap();
        assert!(matches!(
            migrate(&mut c, "test", &m[..1]),
            Err(StoreError::SchemaTooNew { found: 2, .. })
        ));
    }
}
