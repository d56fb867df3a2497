//! One local Postgres cluster: a directory holding the data directory (`data/`), the
//! server log (`postgres.log`) and the Unix socket, served on one TCP port of 127.0.0.1.
//!
//! Settings that change per start (port, socket directory) and our dev/test tuning live in
//! `data/pgshard.conf`, included from `postgresql.conf` and rewritten at every start, so a
//! reused data directory can come back on a different port.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::DevClusterError;
use super::install::{PgInstall, run_checked};
use super::port::free_port;

/// The superuser created by `initdb -U postgres`; trust authentication, no password.
pub const SUPERUSER: &str = "postgres";

/// File (in the data directory) holding the settings written at every start.
const SETTINGS_FILE: &str = "pgshard.conf";
/// Line added to `postgresql.conf` to read [`SETTINGS_FILE`].
const INCLUDE_LINE: &str = "include_if_exists = 'pgshard.conf'";
/// How long `pg_ctl` waits for the server to accept connections.
const START_TIMEOUT_SECS: &str = "60";
/// Lines of the server log shown when a start fails.
const LOG_TAIL_LINES: usize = 30;
/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A local Postgres cluster; stopped on drop if still running.
#[derive(Debug)]
pub struct PgCluster {
    install: PgInstall,
    dir: PathBuf,
    /// `Some(port)` while a server we started is running
    port: Option<u16>,
}

impl PgCluster {
    /// Initialise a cluster in `dir` (created if missing) with `initdb -U postgres
    /// --auth=trust -E UTF8 --no-locale`, or reuse it if `dir/data` already holds one.
    pub fn init(install: &PgInstall, dir: &Path) -> Result<PgCluster, DevClusterError> {
        let cluster = PgCluster::prepare(install, dir)?;
        if !cluster.is_initialized() {
            let data = cluster.data_dir();
            if data.exists() {
                // a previous initdb died half-way; start over
                std::fs::remove_dir_all(&data).map_err(|e| {
                    DevClusterError::io(format!("cannot remove {}", data.display()), e)
                })?;
            }
            install.hand_over(&cluster.dir)?;
            let mut initdb = install.server_command(
                "initdb",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-U".as_ref(),
                    SUPERUSER.as_ref(),
                    "--auth=trust".as_ref(),
                    "-E".as_ref(),
                    "UTF8".as_ref(),
                    "--no-locale".as_ref(),
                    "--no-sync".as_ref(),
                ],
            );
            run_checked(&mut initdb)?;
        }
        cluster.finish_setup()?;
        Ok(cluster)
    }

    /// Set up a cluster in `dir` as a copy (`cp -a`) of `template`, the data directory of
    /// an initialised, stopped cluster: much faster than `initdb`. Reuses `dir/data` if it
    /// already holds a cluster.
    pub fn from_template(
        install: &PgInstall,
        template: &Path,
        dir: &Path,
    ) -> Result<PgCluster, DevClusterError> {
        let cluster = PgCluster::prepare(install, dir)?;
        if !cluster.is_initialized() {
            let mut cp = Command::new("cp");
            cp.arg("-a").arg(template).arg(cluster.data_dir());
            run_checked(&mut cp)?;
        }
        cluster.finish_setup()?;
        Ok(cluster)
    }

    /// The cluster directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Postgres data directory inside [`PgCluster::dir`].
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The TCP port while running.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether the data directory holds an initialised cluster.
    pub fn is_initialized(&self) -> bool {
        self.data_dir().join("PG_VERSION").is_file()
    }

    /// A connection URL for `db` as the superuser over TCP.
    pub fn url(&self, db: &str) -> Result<String, DevClusterError> {
        let port = self.running_port()?;
        Ok(format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{db}"))
    }

    /// Start the server on 127.0.0.1:`port` and wait until it accepts connections. A
    /// server left running in this directory by an earlier process is stopped first.
    pub fn start(&mut self, port: u16) -> Result<(), DevClusterError> {
        if self.port.is_some() {
            self.stop()?;
        }
        self.stop_leftover_server()?;
        self.write_settings(port)?;
        let log = self.log_file();
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let data = self.data_dir();
        let mut pg_ctl = self.install.server_command(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                START_TIMEOUT_SECS.as_ref(),
                "-s".as_ref(),
            ],
        );
        match run_checked(&mut pg_ctl) {
            Ok(_) => {
                self.port = Some(port);
                Ok(())
            }
            Err(err) => {
                let mut log_tail = tail(&read_from(&log, log_start), LOG_TAIL_LINES);
                if log_tail.trim().is_empty() {
                    log_tail = err.to_string();
                }
                let addr_in_use = log_tail.contains("Address already in use");
                Err(DevClusterError::Start {
                    dir: self.dir.clone(),
                    port,
                    log_tail,
                    addr_in_use,
                })
            }
        }
    }

    /// Start on a free port; if someone takes the port in the meantime, try once more
    /// with another. Returns the port.
    pub fn start_on_free_port(&mut self) -> Result<u16, DevClusterError> {
        let pick = || free_port().map_err(|e| DevClusterError::io("cannot find a free port", e));
        match self.start(pick()?) {
            Err(DevClusterError::Start {
                addr_in_use: true, ..
            }) => {
                let port = pick()?;
                self.start(port)?;
                Ok(port)
            }
            Err(err) => Err(err),
            Ok(()) => self.running_port(),
        }
    }

    /// Stop the server (`pg_ctl stop -m fast`) if we started it.
    pub fn stop(&mut self) -> Result<(), DevClusterError> {
        if self.port.is_none() {
            return Ok(());
        }
        self.pg_ctl_stop()?;
        self.port = None;
        Ok(())
    }

    /// Create database `name` unless it exists; `true` if it was created.
    pub fn create_database(&self, name: &str) -> Result<bool, DevClusterError> {
        let exists = self.psql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            quote_literal(name)
        ))?;
        if exists.trim() == "1" {
            return Ok(false);
        }
        self.psql(&format!("CREATE DATABASE {}", quote_ident(name)))?;
        Ok(true)
    }

    /// Run one SQL command with `psql` against database `postgres`; returns its unaligned,
    /// tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String, DevClusterError> {
        let port = self.running_port()?.to_string();
        let mut psql = self.install.client_command("psql");
        psql.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
            ])
            .arg("-c")
            .arg(sql)
            .env_remove("PGOPTIONS")
            .env_remove("PGSERVICE");
        let output = run_checked(&mut psql)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn running_port(&self) -> Result<u16, DevClusterError> {
        self.port
            .ok_or_else(|| DevClusterError::NotRunning(self.dir.clone()))
    }

    /// Make `dir` absolute and create it; the cluster is not running yet.
    fn prepare(install: &PgInstall, dir: &Path) -> Result<PgCluster, DevClusterError> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| DevClusterError::io("cannot read the current directory", e))?
                .join(dir)
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| DevClusterError::io(format!("cannot create {}", dir.display()), e))?;
        Ok(PgCluster {
            install: install.clone(),
            dir,
            port: None,
        })
    }

    /// Include our settings file from `postgresql.conf` and give everything to the
    /// server user.
    fn finish_setup(&self) -> Result<(), DevClusterError> {
        let conf = self.data_dir().join("postgresql.conf");
        let text = std::fs::read_to_string(&conf)
            .map_err(|e| DevClusterError::io(format!("cannot read {}", conf.display()), e))?;
        if !text.lines().any(|line| line.trim() == INCLUDE_LINE) {
            let mut text = text;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(INCLUDE_LINE);
            text.push('\n');
            std::fs::write(&conf, text)
                .map_err(|e| DevClusterError::io(format!("cannot write {}", conf.display()), e))?;
        }
        self.install.hand_over(&self.dir)
    }

    /// Write the per-start settings.
    fn write_settings(&self, port: u16) -> Result<(), DevClusterError> {
        let socket_dir = self.dir.to_string_lossy();
        // too long a socket path is fatal at startup; TCP alone is enough for us
        let socket_dir = if socket_dir.len() + "/.s.PGSQL.65535".len() <= MAX_SOCKET_PATH {
            socket_dir.into_owned()
        } else {
            String::new()
        };
        let settings = format!(
            "# Written by pgshard at every start; overrides postgresql.conf.\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = {}\n\
             max_connections = 200\n\
             max_prepared_transactions = 20\n\
             shared_buffers = '32MB'\n\
             # a throw-away dev/test cluster: durability is not needed\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            quote_literal(&socket_dir)
        );
        let path = self.data_dir().join(SETTINGS_FILE);
        std::fs::write(&path, settings)
            .map_err(|e| DevClusterError::io(format!("cannot write {}", path.display()), e))?;
        self.install.hand_over_file(&path)
    }

    /// A previous process may have been killed with its server still running here.
    fn stop_leftover_server(&self) -> Result<(), DevClusterError> {
        if !self.data_dir().join("postmaster.pid").exists() {
            return Ok(());
        }
        let data = self.data_dir();
        let mut status = self.install.server_command(
            "pg_ctl",
            &["status".as_ref(), "-D".as_ref(), data.as_os_str()],
        );
        if run_checked(&mut status).is_ok() {
            self.pg_ctl_stop()?;
        }
        Ok(())
    }

    fn pg_ctl_stop(&self) -> Result<(), DevClusterError> {
        let data = self.data_dir();
        let mut pg_ctl = self.install.server_command(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-s".as_ref(),
            ],
        );
        run_checked(&mut pg_ctl).map(|_| ())
    }
}

impl Drop for PgCluster {
    /// Best effort: a failure to stop cannot be reported from here.
    fn drop(&mut self) {
        if self.port.is_some() {
            let _ = self.pg_ctl_stop();
        }
    }
}

/// The bytes of `path` from `offset` on, lossily decoded; empty if unreadable.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A SQL string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier, always quoted so any name works.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
