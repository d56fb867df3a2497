//! Control-plane connections to the shards and what the rebalancer reads from their
//! catalogs.

use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use crate::config::ShardConfig;

use super::sql::{self, Column};

/// Why a step on a shard failed.
#[derive(Debug, thiserror::Error)]
#[error("shard \"{shard}\": {message}")]
pub struct ShardError {
    /// shard name
    pub shard: String,
    /// what failed, with the server's SQLSTATE when it sent one
    pub message: String,
}

/// The text of a Postgres error, with its SQLSTATE when the server sent one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // the cause carries the reason (e.g. why a TLS handshake failed)
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A connection to one shard, named for messages.
pub struct ShardClient {
    /// shard name
    pub name: String,
    /// the connection
    pub client: Client,
}

impl ShardClient {
    /// Connect with the proxy's own credentials for the shard.
    pub async fn connect(shard: &ShardConfig) -> Result<ShardClient, ShardError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&shard.host)
            .port(shard.port)
            .user(&shard.user)
            .dbname(&shard.dbname)
            .application_name("pgshard-rebalance")
            .connect_timeout(Duration::from_secs(10));
        if let Some(password) = &shard.password {
            config.password(password);
        }
        // TLS as the proxy's own connections use it (`[tls] backend`)
        let connected = match shard.tls.client_config() {
            None => config.connect(NoTls).await.map(|(client, connection)| {
                tokio::spawn(connection);
                client
            }),
            Some(tls) => {
                config.ssl_mode(SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                config.connect(tls).await.map(|(client, connection)| {
                    tokio::spawn(connection);
                    client
                })
            }
        };
        let client = connected.map_err(|e| ShardError {
            shard: shard.name.clone(),
            message: format!(
                "cannot connect to {}:{}: {}",
                shard.host,
                shard.port,
                describe(&e)
            ),
        })?;
        let this = ShardClient {
            name: shard.name.clone(),
            client,
        };
        // Literal arrays of keys are built with doubled quotes only; the row checksums
        // compare rows' text forms, which these settings shape, between two servers.
        this.execute(
            "SET standard_conforming_strings = on; SET TimeZone = 'UTC'; \
             SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET bytea_output = 'hex'",
        )
        .await?;
        Ok(this)
    }

    /// Wrap an error of this shard.
    pub fn error(&self, message: impl Into<String>) -> ShardError {
        ShardError {
            shard: self.name.clone(),
            message: message.into(),
        }
    }

    /// Run statements (simple protocol) and ignore their results.
    pub async fn execute(&self, sql: &str) -> Result<(), ShardError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| self.error(format!("{}: {}", first_line(sql), describe(&e))))
    }

    /// Run each statement of `sqls` in order.
    pub async fn execute_all(&self, sqls: &[String]) -> Result<(), ShardError> {
        for sql in sqls {
            self.execute(sql).await?;
        }
        Ok(())
    }

    /// One text value of the first row of a query, if any row.
    pub async fn value(&self, sql: &str) -> Result<Option<String>, ShardError> {
        let rows = self
            .client
            .query(sql, &[])
            .await
            .map_err(|e| self.error(format!("{}: {}", first_line(sql), describe(&e))))?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<String>>(0)))
    }

    /// The columns of `table` (None when it does not exist).
    pub async fn columns(&self, table: &str) -> Result<Option<Vec<Column>>, ShardError> {
        let rows = self
            .client
            .query(sql::COLUMNS_QUERY, &[&sql::table_ident(table)])
            .await
            .map_err(|e| self.error(format!("reading the columns of {table}: {}", describe(&e))))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let identity: String = r.get(4);
                    let generated: String = r.get(5);
                    Column {
                        name: r.get(0),
                        sql_type: r.get(1),
                        not_null: r.get(2),
                        default: r.get(3),
                        identity: identity.chars().next(),
                        generated: !generated.is_empty(),
                    }
                })
                .collect(),
        ))
    }

    /// `(name, definition)` of the constraints worth copying to a new shard.
    pub async fn constraints(&self, table: &str) -> Result<Vec<(String, String)>, ShardError> {
        self.pairs(sql::CONSTRAINTS_QUERY, table).await
    }

    /// Definitions of the indexes not backing a constraint.
    pub async fn indexes(&self, table: &str) -> Result<Vec<String>, ShardError> {
        self.strings(sql::INDEXES_QUERY, table).await
    }

    /// Sequences owned by the table's columns.
    pub async fn sequences(&self, table: &str) -> Result<Vec<String>, ShardError> {
        self.strings(sql::SEQUENCES_QUERY, table).await
    }

    async fn catalog(
        &self,
        query: &str,
        table: &str,
    ) -> Result<Vec<tokio_postgres::Row>, ShardError> {
        self.client
            .query(query, &[&sql::table_ident(table)])
            .await
            .map_err(|e| self.error(format!("reading the catalog for {table}: {}", describe(&e))))
    }

    async fn strings(&self, query: &str, table: &str) -> Result<Vec<String>, ShardError> {
        Ok(self
            .catalog(query, table)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    async fn pairs(&self, query: &str, table: &str) -> Result<Vec<(String, String)>, ShardError> {
        Ok(self
            .catalog(query, table)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

/// The first line of a statement, shortened, for error messages.
fn first_line(sql: &str) -> String {
    let line = sql.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(80).collect();
    if out.len() < line.len() || sql.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_shortens() {
        assert_eq!(first_line("SELECT 1"), "SELECT 1");
        assert_eq!(first_line("SELECT\n1"), "SELECT…");
        assert_eq!(first_line(&"x".repeat(100)).chars().count(), 81);
    }
}
