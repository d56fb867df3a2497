//! Where the Postgres server binaries live, and as which user they must run.
//!
//! Postgres refuses to run as root, and CI runs as root: then every server-side tool
//! (`initdb`, `pg_ctl`) runs as the `postgres` system user through `runuser` (or `su`
//! where `runuser` is missing), and the cluster directories are handed over to that user.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::DevClusterError;

/// System user that owns and runs the servers when we are root.
const SERVER_USER: &str = "postgres";

/// A Postgres installation: its bin directory and how to launch its server tools.
#[derive(Debug, Clone)]
pub struct PgInstall {
    bin_dir: PathBuf,
    run_as: RunAs,
}

/// As whom the server tools run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RunAs {
    /// the current (non-root) user, directly
    CurrentUser,
    /// the `postgres` user via `runuser -u postgres --`
    Runuser(PathBuf),
    /// the `postgres` user via `su postgres -s /bin/sh -c '…'`
    Su,
}

impl PgInstall {
    /// Find the binaries: `$PG_BIN`, else the real directory of `initdb` on `PATH`
    /// (symlinks resolved), else the highest `/usr/lib/postgresql/*/bin`.
    pub fn discover() -> Result<PgInstall, DevClusterError> {
        let bin_dir = match std::env::var_os("PG_BIN").filter(|v| !v.is_empty()) {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.join("initdb").is_file() {
                    return Err(DevClusterError::BadPgBin(dir));
                }
                dir
            }
            None => initdb_on_path()
                .or_else(highest_debian_install)
                .ok_or(DevClusterError::NoBinaries)?,
        };
        PgInstall::from_bin_dir(&bin_dir)
    }

    /// Use the binaries in `bin_dir` (must contain `initdb`).
    pub fn from_bin_dir(bin_dir: &Path) -> Result<PgInstall, DevClusterError> {
        if !bin_dir.join("initdb").is_file() {
            return Err(DevClusterError::BadPgBin(bin_dir.to_path_buf()));
        }
        let run_as = if running_as_root() {
            if !server_user_exists() {
                return Err(DevClusterError::NoPostgresUser);
            }
            match find_runuser() {
                Some(path) => RunAs::Runuser(path),
                None => RunAs::Su,
            }
        } else {
            RunAs::CurrentUser
        };
        Ok(PgInstall {
            bin_dir: bin_dir.to_path_buf(),
            run_as,
        })
    }

    /// The directory holding `initdb`, `pg_ctl`, `postgres`, `psql`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Full path of one of the tools, e.g. `tool("pg_ctl")`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Whether server tools run as the `postgres` user (we are root).
    pub fn runs_as_server_user(&self) -> bool {
        self.run_as != RunAs::CurrentUser
    }

    /// A command for a server tool (`initdb`, `pg_ctl`), run as the user that may run
    /// Postgres. Paths in `args` must be absolute: the command starts in `/` because the
    /// `postgres` user may not be allowed into our working directory.
    pub fn server_command<S: AsRef<OsStr>>(&self, tool: &str, args: &[S]) -> Command {
        let program = self.tool(tool);
        let mut cmd = match &self.run_as {
            RunAs::CurrentUser => {
                let mut cmd = Command::new(&program);
                cmd.args(args);
                cmd
            }
            RunAs::Runuser(runuser) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", SERVER_USER, "--"]).arg(&program).args(args);
                cmd
            }
            RunAs::Su => {
                let mut line = shell_quote(program.as_os_str());
                for arg in args {
                    line.push(' ');
                    line.push_str(&shell_quote(arg.as_ref()));
                }
                let mut cmd = Command::new("su");
                cmd.args([SERVER_USER, "-s", "/bin/sh", "-c"]).arg(line);
                cmd
            }
        };
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }

    /// A command for a client tool (`psql`), run as ourselves.
    pub fn client_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.tool(tool));
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Let the server user own `dir` (recursively) and reach it: when root, `chown -R
    /// postgres:` it and add search permission (`o+x`) to any ancestor that lacks it.
    /// Does nothing when not root.
    pub fn hand_over(&self, dir: &Path) -> Result<(), DevClusterError> {
        if !self.runs_as_server_user() {
            return Ok(());
        }
        self.chown(dir, true)?;
        for ancestor in dir.ancestors().skip(1) {
            let meta = std::fs::metadata(ancestor).map_err(|e| {
                DevClusterError::io(format!("cannot inspect {}", ancestor.display()), e)
            })?;
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let perms = std::fs::Permissions::from_mode(mode | 0o001);
                std::fs::set_permissions(ancestor, perms).map_err(|e| {
                    DevClusterError::io(
                        format!(
                            "cannot make {} traversable for the postgres user",
                            ancestor.display()
                        ),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Give one file to the server user (when root), e.g. a config file we wrote into
    /// its data directory. Unlike [`PgInstall::hand_over`], ancestors are left alone:
    /// the data directory must stay private (0700).
    pub fn hand_over_file(&self, file: &Path) -> Result<(), DevClusterError> {
        if self.runs_as_server_user() {
            self.chown(file, false)?;
        }
        Ok(())
    }

    fn chown(&self, path: &Path, recursive: bool) -> Result<(), DevClusterError> {
        let mut chown = Command::new("chown");
        if recursive {
            chown.arg("-R");
        }
        chown
            .arg(format!("{SERVER_USER}:"))
            .arg(path)
            .stdin(Stdio::null());
        run_checked(&mut chown).map(|_| ())
    }
}

/// Run a command to completion; a non-zero exit becomes [`DevClusterError::Command`]
/// carrying its output.
pub fn run_checked(cmd: &mut Command) -> Result<Output, DevClusterError> {
    let command = describe(cmd);
    let output = cmd
        .output()
        .map_err(|e| DevClusterError::io(format!("cannot run `{command}`"), e))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(DevClusterError::Command {
        command,
        status: output.status.to_string(),
        output: text.trim_end().to_string(),
    })
}

/// The command line as one string, for error messages.
fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// `initdb` found on `PATH`, symlinks resolved, if its directory also has `pg_ctl`
/// (a distribution wrapper script would not).
fn initdb_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .filter(|candidate| candidate.is_file())
        .filter_map(|candidate| std::fs::canonicalize(candidate).ok())
        .filter_map(|real| real.parent().map(Path::to_path_buf))
        .find(|dir| dir.join("pg_ctl").is_file())
}

/// The highest-versioned `/usr/lib/postgresql/<version>/bin` with `initdb` (Debian layout).
fn highest_debian_install() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = version_key(&entry.file_name().to_string_lossy())?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// `"15"` → `[15]`, `"9.6"` → `[9, 6]`; anything else is not a version directory.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Effective uid 0, read from `/proc/self/status` (`Uid: real effective saved fs`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status))
        .is_some_and(|uid| uid == 0)
}

fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn server_user_exists() -> bool {
    Command::new("id")
        .args(["-u", SERVER_USER])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn find_runuser() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join("runuser"))
        .find(|p| p.is_file())
}

/// Quote one argument for `/bin/sh`: wrap in single quotes, escaping embedded ones.
fn shell_quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_number() {
        let status = "Name:\tx\nUid:\t1000\t0\t1000\t1000\nGid:\t5\t5\t5\t5\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn version_directories_sort_numerically() {
        assert_eq!(version_key("15"), Some(vec![15]));
        assert_eq!(version_key("9.6"), Some(vec![9, 6]));
        assert_eq!(version_key("common"), None);
        assert!(version_key("10") > version_key("9.6"));
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote(OsStr::new("a b")), "'a b'");
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn su_runs_one_quoted_shell_line_as_postgres() {
        let install = PgInstall {
            bin_dir: PathBuf::from("/opt/pg bin"),
            run_as: RunAs::Su,
        };
        let cmd = install.server_command("pg_ctl", &["-D", "/data/it's"]);
        assert_eq!(cmd.get_program(), "su");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                r"'/opt/pg bin/pg_ctl' '-D' '/data/it'\''s'"
            ]
        );
    }

    #[test]
    fn failed_command_reports_its_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        match run_checked(&mut cmd) {
            Err(DevClusterError::Command { output, .. }) => {
                assert!(output.contains("out"), "{output}");
                assert!(output.contains("err"), "{output}");
            }
            other => panic!("expected a command error, got {other:?}"),
        }
    }
}
