//! Shard URLs: `postgres://user[:password]@host[:port]/database`, parsed and redacted.

use percent_encoding::percent_decode_str;

/// The parts of a `postgres://` URL the proxy needs to log in to a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// host name or IP (without IPv6 brackets)
    pub host: String,
    /// TCP port (default 5432)
    pub port: u16,
    /// login user
    pub user: String,
    /// login password, if given
    pub password: Option<String>,
    /// database name
    pub dbname: String,
}

impl PgUrl {
    /// Parse `postgres[ql]://user[:password]@host[:port]/database`. User, host and database
    /// are required; connection parameters (`?…`), several hosts and Unix sockets are not
    /// supported. Percent-escapes are decoded in user, password and database.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                format!(
                    "url \"{}\" is not a postgres:// or postgresql:// URL",
                    redact_url(url)
                )
            })?;
        if rest.contains('?') || rest.contains('#') {
            return Err(
                "connection parameters (?…) are not supported in shard urls: \
                 write postgres://user[:password]@host[:port]/database \
                 (TLS to the shards is set by [tls] backend)"
                    .into(),
            );
        }
        let (authority, path) = rest
            .split_once('/')
            .ok_or("url has no database name: write postgres://user@host:port/database")?;
        let dbname = decode(path, "database name")?;
        if dbname.is_empty() {
            return Err(
                "url has no database name: write postgres://user@host:port/database".into(),
            );
        }
        if dbname.contains('/') || path.contains('/') {
            return Err(format!("database name \"{dbname}\" must not contain '/'"));
        }
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .ok_or("url has no user: write postgres://user@host:port/database")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (decode(u, "user")?, Some(decode(p, "password")?)),
            None => (decode(userinfo, "user")?, None),
        };
        if user.is_empty() {
            return Err("url has no user: write postgres://user@host:port/database".into());
        }
        if hostport.contains(',') {
            return Err("several hosts in one shard url are not supported".into());
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("url has an unterminated [IPv6] host")?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or("url has junk after the [IPv6] host")?,
                ),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(
                "url has no host (Unix sockets are not supported): write postgres://user@host:port/database"
                    .into(),
            );
        }
        let port = match port {
            None => 5432,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("url port \"{p}\" is not a TCP port (1-65535)")),
            },
        };
        Ok(PgUrl {
            host,
            port,
            user,
            password,
            dbname,
        })
    }
}

/// Percent-decode a URL part into UTF-8.
fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("url {what} is not valid UTF-8 after percent-decoding"))
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:***@{host}{}",
                &url[..scheme_end],
                &rest[authority_end..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
