//! Local Postgres clusters for `pgshard dev` and the integration tests: find the
//! binaries, initdb, start on a free port (as the `postgres` user when running as root),
//! stop cleanly.
//!
//! Everything here is blocking (it drives `initdb`, `pg_ctl` and `psql` as child
//! processes); async callers wrap it in `spawn_blocking`.
//!
//! - [`install`]: where the Postgres binaries are and as whom they run.
//! - [`cluster`]: one data directory + port: init, start, stop, create a database.
//! - [`port`]: pick a free TCP port.
//! - [`shardmap`]: render a shard map file for a set of local shards.

pub mod cluster;
pub mod install;
pub mod port;
pub mod shardmap;

use std::path::PathBuf;

pub use cluster::PgCluster;
pub use install::PgInstall;
pub use port::free_port;

/// Why a local cluster could not be set up, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevClusterError {
    /// no server binaries anywhere we look
    #[error(
        "no PostgreSQL server binaries found (looked at $PG_BIN, `initdb` on PATH and \
         /usr/lib/postgresql/*/bin); install postgresql, e.g. `apt-get install postgresql`"
    )]
    NoBinaries,
    /// `PG_BIN` is set but does not point at a directory with `initdb`
    #[error("PG_BIN={0} does not contain initdb; point PG_BIN at the Postgres bin directory")]
    BadPgBin(PathBuf),
    /// running as root but there is no `postgres` user to run the server as
    #[error(
        "running as root, but Postgres refuses to run as root and there is no `postgres` user \
         to run it as; install postgresql (it creates the user) or run as a normal user"
    )]
    NoPostgresUser,
    /// a file system operation failed
    #[error("{what}: {source}")]
    Io {
        /// what was being done, with the path
        what: String,
        /// the I/O error
        source: std::io::Error,
    },
    /// a child process exited unsuccessfully
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// the command line
        command: String,
        /// exit status
        status: String,
        /// its stdout and stderr
        output: String,
    },
    /// the server did not come up; the log tail says why
    #[error("postgres in {dir} did not start on port {port}; server log:\n{log_tail}")]
    Start {
        /// the cluster directory
        dir: PathBuf,
        /// the port it was asked to listen on
        port: u16,
        /// last lines of the server log
        log_tail: String,
        /// the port was taken by someone else (worth retrying on another port)
        addr_in_use: bool,
    },
    /// the cluster is not running, so it has no port to talk to
    #[error("the cluster in {0} is not running")]
    NotRunning(PathBuf),
}

impl DevClusterError {
    /// An I/O error with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DevClusterError::Io {
            what: what.into(),
            source,
        }
    }
}
