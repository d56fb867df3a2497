//! The proxies serving the map being rebalanced, driven through their admin database
//! (`pgshard`): hold and release slots, reload the map, read the epoch they serve.

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::config::slot_runs;
use crate::config::validate::format_range;

/// Why a proxy did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("proxy {proxy}: {message}")]
pub struct ProxyError {
    /// the admin URL, password hidden
    pub proxy: String,
    /// what failed
    pub message: String,
}

struct Proxy {
    url: String,
    shown: String,
    client: Option<Client>,
}

/// Admin connections to every proxy.
pub struct Proxies {
    proxies: Vec<Proxy>,
    /// connections reopened so far (a proxy restarted, or the network dropped)
    reconnects: u64,
    /// `reconnects` when the last HOLD was sent
    reconnects_at_hold: u64,
}

/// `'3-5,9'` for a set of slots.
pub fn ranges_text(slots: &[u32]) -> String {
    let Some(&max) = slots.iter().max() else {
        return String::new();
    };
    let mut selected = vec![false; max as usize + 1];
    for &s in slots {
        selected[s as usize] = true;
    }
    slot_runs(selected.into_iter())
        .into_iter()
        .map(|(lo, hi)| format_range(lo, hi))
        .collect::<Vec<_>>()
        .join(",")
}

/// A URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl Proxies {
    /// Connect to every admin URL (none: an offline rebalance, nothing to coordinate).
    pub async fn connect(urls: &[String]) -> Result<Proxies, ProxyError> {
        let mut proxies = Vec::new();
        for url in urls {
            let mut p = Proxy {
                url: url.clone(),
                shown: redact(url),
                client: None,
            };
            p.client = Some(open(&p).await?);
            proxies.push(p);
        }
        Ok(Proxies {
            proxies,
            reconnects: 0,
            reconnects_at_hold: 0,
        })
    }

    /// How many proxies are coordinated.
    pub fn len(&self) -> usize {
        self.proxies.len()
    }

    /// No proxy (offline rebalance).
    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// Run one admin command on every proxy; a dropped connection is reopened once.
    async fn command(&mut self, sql: &str) -> Result<Vec<Vec<SimpleQueryMessage>>, ProxyError> {
        let mut out = Vec::new();
        for p in &mut self.proxies {
            let mut attempt = 0;
            loop {
                if p.client.is_none() {
                    p.client = Some(open(p).await?);
                    self.reconnects += 1;
                }
                let client = p.client.as_ref().expect("connected above");
                match client.simple_query(sql).await {
                    Ok(messages) => {
                        out.push(messages);
                        break;
                    }
                    Err(e) if e.as_db_error().is_none() && attempt == 0 => {
                        // connection lost (proxy restarted?): reconnect and retry once
                        p.client = None;
                        attempt += 1;
                    }
                    Err(e) => {
                        return Err(ProxyError {
                            proxy: p.shown.clone(),
                            message: format!("{sql}: {}", super::shard::describe(&e)),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Hold statements for `slots` on every proxy. Returns once every proxy holds them and
    /// has no statement for them still running.
    pub async fn hold(&mut self, slots: &[u32]) -> Result<(), ProxyError> {
        self.reconnects_at_hold = self.reconnects;
        self.command(&format!("HOLD SLOTS '{}'", ranges_text(slots)))
            .await
            .map(|_| ())
    }

    /// Right before a cutover's decision: every proxy still holds `slots`, and none was
    /// reconnected since the HOLD (a restarted proxy has forgotten its holds and may have
    /// served the slots from the old owner meanwhile).
    pub async fn check_held(&mut self, slots: &[u32]) -> Result<(), ProxyError> {
        if self.reconnects != self.reconnects_at_hold {
            return Err(ProxyError {
                proxy: "(one of them)".into(),
                message: "the admin connection was reopened during the cutover: the proxy may \
                          have restarted and lost its holds"
                    .into(),
            });
        }
        for (proxy, held) in self.held().await? {
            let set = parse_ranges(&held);
            if let Some(missing) = slots.iter().find(|s| !set.contains(s)) {
                return Err(ProxyError {
                    proxy,
                    message: format!("slot {missing} is no longer held (held: \"{held}\")"),
                });
            }
        }
        if self.reconnects != self.reconnects_at_hold {
            return Err(ProxyError {
                proxy: "(one of them)".into(),
                message: "the admin connection was reopened during the cutover".into(),
            });
        }
        Ok(())
    }

    /// Let held statements for `slots` run (routed by the map each proxy has now).
    pub async fn release(&mut self, slots: &[u32]) -> Result<(), ProxyError> {
        self.command(&format!("RELEASE SLOTS '{}'", ranges_text(slots)))
            .await
            .map(|_| ())
    }

    /// Release every hold (recovery after a crash mid-cutover).
    pub async fn release_all(&mut self) -> Result<(), ProxyError> {
        self.command("RELEASE ALL").await.map(|_| ())
    }

    /// Make every proxy load the map file and check each now serves `epoch` (or later).
    pub async fn reload(&mut self, epoch: u64) -> Result<(), ProxyError> {
        self.command("RELOAD").await?;
        let epochs = self.epochs().await?;
        for (p, e) in self.proxies.iter().zip(epochs) {
            if e < epoch {
                return Err(ProxyError {
                    proxy: p.shown.clone(),
                    message: format!(
                        "serves map epoch {e} after RELOAD, expected {epoch}: does it read the same map file?"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The map epoch each proxy serves.
    pub async fn epochs(&mut self) -> Result<Vec<u64>, ProxyError> {
        let answers = self.command("SHOW MAP").await?;
        let mut out = Vec::new();
        for (p, messages) in self.proxies.iter().zip(answers) {
            let epoch = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get("epoch").and_then(|v| v.parse().ok()),
                _ => None,
            });
            out.push(epoch.ok_or_else(|| ProxyError {
                proxy: p.shown.clone(),
                message: "SHOW MAP did not return an epoch".into(),
            })?);
        }
        Ok(out)
    }

    /// Held slot ranges per proxy (for `rebalance status`).
    pub async fn held(&mut self) -> Result<Vec<(String, String)>, ProxyError> {
        let answers = self.command("SHOW MAP").await?;
        Ok(self
            .proxies
            .iter()
            .zip(answers)
            .map(|(p, messages)| {
                let held = messages
                    .iter()
                    .find_map(|m| match m {
                        SimpleQueryMessage::Row(row) => row.get("held").map(str::to_owned),
                        _ => None,
                    })
                    .unwrap_or_default();
                (p.shown.clone(), held)
            })
            .collect())
    }
}

/// The slots of `"3-5,9"` (what SHOW MAP's `held` column lists); bad parts are skipped.
fn parse_ranges(text: &str) -> std::collections::BTreeSet<u32> {
    let mut out = std::collections::BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) {
            out.extend(lo..=hi);
        }
    }
    out
}

/// Connect to a proxy's admin console. The URL's `sslmode` decides TLS: `disable` →
/// plain; `prefer` (the default) or `require` → TLS when the proxy offers it, without
/// checking its certificate (a `--proxy` URL cannot name a CA file).
async fn open(p: &Proxy) -> Result<Client, ProxyError> {
    let fail = |message: String| ProxyError {
        proxy: p.shown.clone(),
        message,
    };
    let config: tokio_postgres::Config = p
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| fail(format!("bad URL: {e}")))?;
    let connected = match config.get_ssl_mode() {
        SslMode::Disable => config.connect(NoTls).await.map(|(client, connection)| {
            tokio::spawn(connection);
            client
        }),
        _ => {
            let tls = crate::tls::require_config().map_err(fail)?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            config.connect(tls).await.map(|(client, connection)| {
                tokio::spawn(connection);
                client
            })
        }
    };
    connected.map_err(|e| fail(format!("cannot connect: {}", super::shard::describe(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_redaction() {
        assert_eq!(ranges_text(&[9, 3, 4, 5]), "3-5,9");
        assert_eq!(ranges_text(&[0]), "0");
        assert_eq!(ranges_text(&[]), "");
        assert_eq!(
            redact("postgres://app:secret@h:6432/pgshard"),
            "postgres://app:***@h:6432/pgshard"
        );
        assert_eq!(
            redact("postgres://app@h/pgshard"),
            "postgres://app@h/pgshard"
        );
    }
}
