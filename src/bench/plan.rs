//! What to run: targets from `NAME=URL`, durations from `5s`, and the interleaved
//! schedule of rounds.
use std::time::Duration;

use super::BenchError;

/// One server to measure: a short name for the report and its connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// label in the report (`proxy`, `direct`, …)
    pub name: String,
    /// `postgres://user:password@host:port/db`
    pub url: String,
}

/// Parse `NAME=URL`. The name is what the report shows, so it must be non-empty and
/// contain no `=`; the URL is checked by the driver when connecting.
pub fn parse_target(text: &str) -> Result<Target, BenchError> {
    let bad = |why: &str| BenchError::TargetSyntax {
        text: text.to_string(),
        why: why.to_string(),
    };
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=URL"))?;
    let (name, url) = (name.trim(), url.trim());
    if name.is_empty() {
        return Err(bad("the name before '=' is empty"));
    }
    if url.is_empty() {
        return Err(bad("the URL after '=' is empty"));
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad("the URL must start with postgres:// or postgresql://"));
    }
    Ok(Target {
        name: name.to_string(),
        url: url.to_string(),
    })
}

/// Parse a duration such as `5s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, BenchError> {
    let t = text.trim();
    let bad = || BenchError::DurationSyntax(text.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

/// The order in which targets run: round 0 visits every target in the order given, then
/// round 1, and so on (A B C A B C …). Interleaving spreads slow drifts of the machine
/// (caches warming, other load, checkpoints) over all targets instead of one.
/// Each entry is `(round, target index)`.
pub fn schedule(targets: usize, rounds: usize) -> Vec<(usize, usize)> {
    (0..rounds)
        .flat_map(|r| (0..targets).map(move |t| (r, t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splits_at_the_first_equals_sign() {
        let t = parse_target("proxy=postgres://app:a=b@127.0.0.1:6432/app").unwrap();
        assert_eq!(t.name, "proxy");
        assert_eq!(t.url, "postgres://app:a=b@127.0.0.1:6432/app");
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (text, why) in [
            ("postgres://x", "expected NAME=URL"),
            ("=postgres://x", "the name before '=' is empty"),
            ("a=", "the URL after '=' is empty"),
            ("a=mysql://x", "must start with postgres://"),
        ] {
            let msg = parse_target(text).unwrap_err().to_string();
            assert!(msg.contains(why), "{text}: {msg}");
            assert!(msg.contains(text), "{text}: {msg}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "0s", "s", "5h", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedule_interleaves_targets_within_each_round() {
        assert_eq!(
            schedule(3, 2),
            vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
        );
        assert!(schedule(2, 0).is_empty());
    }
}
