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
}

impl Settings {
    /// Settings from the startup packet (application_name, DateStyle, TimeZone…).
    pub fn from_startup(params: &[(String, String)]) -> Settings {
        let mut s = Settings::default();
        for (name, value) in params {
            if NOT_SETTINGS.contains(&name.as_str()) || name.starts_with("_pq_.") {
                continue;
            }
            if name == "client_encoding" && value.eq_ignore_ascii_case("utf8") {
                continue; // every backend connection already uses UTF8
            }
            s.statements.push(format!(
                "SET {} = {}",
                quote_ident(name),
                quote_literal(value)
            ));
        }
        s.recompute();
        s
    }

    /// Record a session-level SET/RESET that succeeded outside a transaction block.
    pub fn record(&mut self, sql: &str) {
        let lowered = sql.trim().trim_end_matches(';').trim().to_ascii_lowercase();
        if lowered == "reset all" || lowered.starts_with("discard all") {
            self.statements.clear();
        } else {
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
    fn startup_params_become_set_statements() {
        let s = Settings::from_startup(&[
            ("user".into(), "app".into()),
            ("application_name".into(), "it's".into()),
            ("client_encoding".into(), "UTF8".into()),
        ]);
        assert_eq!(s.statements(), ["SET \"application_name\" = 'it''s'"]);
        assert_ne!(s.sig(), 0);
        assert_eq!(Settings::from_startup(&[]).sig(), 0);
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
