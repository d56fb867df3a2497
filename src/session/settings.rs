//! Session settings (startup parameters and session-level `SET`) under transaction
//! pooling: recorded per client and replayed on whichever backend connection serves the
//! client next, so one client's settings never leak into another's.
//!
//! Each backend connection carries the signature of the settings applied to it; a
//! replay (`RESET ALL` + the client's `SET`s, pipelined before the client's statement)
//! happens only when signatures differ, so clients with identical settings share
//! connections at no cost.

use std::hash::{Hash, Hasher};

/// Settings signature of a connection whose state is unknown (e.g. a `SET` ran inside a
/// transaction that may or may not commit): always reset before reuse.
pub const UNKNOWN_SIG: u64 = u64::MAX;

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// One client's settings.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    statements: Vec<String>,
    sig: u64,
    /// some statement sets what `RESET ALL` does not undo (role, session
    /// authorization): connections that ran them must never serve another client
    sticky: bool,
}

/// Why a startup packet's `options` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported startup option \"{0}\": pgshard accepts -c name=value and --name=value options, client_encoding UTF8 or SQL_ASCII, and standard_conforming_strings on"
)]
pub struct OptionsError(pub String);

/// `name=value` pairs from the `options` startup parameter (`-c a=b --c=d`).
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let pair = if word == "-c" {
            words.next().ok_or_else(|| OptionsError(word.to_owned()))?
        } else if let Some(rest) = word.strip_prefix("-c").or_else(|| word.strip_prefix("--")) {
            rest
        } else {
            return Err(OptionsError(word.to_owned()));
        };
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| OptionsError(word.to_owned()))?;
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

impl Settings {
    /// Settings from the startup packet (application_name, DateStyle, TimeZone…, and
    /// `-c name=value` pairs of `options`). Values are applied with `set_config`, which
    /// reads them exactly as the startup packet would (lists such as `search_path`
    /// included).
    pub fn from_startup(params: &[(String, String)]) -> Result<Settings, OptionsError> {
        let mut s = Settings::default();
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in params {
            if name == "options" {
                pairs.extend(parse_options(value)?);
                continue;
            }
            if NOT_SETTINGS.contains(&name.as_str()) || name.starts_with("_pq_.") {
                continue;
            }
            pairs.push((name.clone(), value.clone()));
        }
        let mut accepted = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let v = value.to_ascii_lowercase();
            match name.to_ascii_lowercase().as_str() {
                "client_encoding" if v == "utf8" || v == "unicode" || v == "utf-8" => {
                    continue; // every backend connection already uses UTF8
                }
                "client_encoding" if v != "sql_ascii" => {
                    return Err(OptionsError(format!("client_encoding={value}")));
                }
                "standard_conforming_strings" if v != "on" => {
                    return Err(OptionsError(format!("standard_conforming_strings={value}")));
                }
                _ => accepted.push((name, value)),
            }
        }
        for (name, value) in accepted {
            s.sticky |= is_sticky_name(&name);
            s.statements.push(format!(
                "SELECT pg_catalog.set_config({}, {}, false)",
                quote_literal(&name),
                quote_literal(&value)
            ));
        }
        s.recompute();
        Ok(s)
    }

    /// True when a connection that applied these settings must be closed after use.
    pub fn is_sticky(&self) -> bool {
        self.sticky
    }

    /// Record a session-level SET/RESET that succeeded outside a transaction block.
    pub fn record(&mut self, sql: &str) {
        let lowered = sql.trim().trim_end_matches(';').trim().to_ascii_lowercase();
        if lowered == "reset all" || lowered.starts_with("discard all") {
            self.statements.clear();
            self.sticky = false;
        } else if lowered.starts_with("discard") {
            // DISCARD PLANS / TEMP / SEQUENCES: nothing to replay
        } else {
            self.sticky |= sets_sticky_state(&lowered);
            self.statements.push(sql.to_owned());
        }
        self.recompute();
    }

    /// The statements to replay, in order.
    pub fn statements(&self) -> &[String] {
        &self.statements
    }

    /// Signature of these settings (0 = none).
    pub fn sig(&self) -> u64 {
        self.sig
    }

    fn recompute(&mut self) {
        if self.statements.is_empty() {
            self.sig = 0;
            return;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.statements.hash(&mut h);
        // Reserve 0 (defaults) and UNKNOWN_SIG.
        self.sig = h.finish().clamp(1, UNKNOWN_SIG - 1);
    }
}

/// Settings `RESET ALL` leaves alone.
fn is_sticky_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "role" || name == "session_authorization"
}

/// Whether a (lower-cased) SET statement changes role or session authorization.
pub fn sets_sticky_state(lowered_sql: &str) -> bool {
    lowered_sql.contains("role") || lowered_sql.contains("authorization")
}

/// Quote an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote a string literal for SQL (standard_conforming_strings on).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_params_become_set_config_calls() {
        let s = Settings::from_startup(&[
            ("user".into(), "app".into()),
            ("application_name".into(), "it's".into()),
            ("client_encoding".into(), "UTF8".into()),
            (
                "options".into(),
                "-c search_path=a,public --statement-timeout=5s".into(),
            ),
        ])
        .unwrap();
        assert_eq!(
            s.statements(),
            [
                "SELECT pg_catalog.set_config('application_name', 'it''s', false)",
                "SELECT pg_catalog.set_config('search_path', 'a,public', false)",
                "SELECT pg_catalog.set_config('statement_timeout', '5s', false)",
            ]
        );
        assert_ne!(s.sig(), 0);
        assert!(!s.is_sticky());
        assert_eq!(Settings::from_startup(&[]).unwrap().sig(), 0);
        assert!(Settings::from_startup(&[("options".into(), "-d 5".into())]).is_err());
        assert!(
            Settings::from_startup(&[("options".into(), "-c role=x".into())])
                .unwrap()
                .is_sticky()
        );
    }

    #[test]
    fn set_role_is_sticky() {
        let mut s = Settings::default();
        s.record("SET ROLE reporting");
        assert!(s.is_sticky());
    }

    #[test]
    fn reset_all_clears() {
        let mut s = Settings::default();
        s.record("SET search_path = x");
        assert_ne!(s.sig(), 0);
        s.record("RESET ALL;");
        assert_eq!(s.sig(), 0);
    }
}
