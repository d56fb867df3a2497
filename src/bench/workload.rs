//! The statements of each workload and how each protocol sends them.
use rand::Rng;
use serde::Serialize;
use tokio_postgres::{Client, Statement};

/// Which statements the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `SELECT abalance … WHERE aid = $1`, one shard per statement
    PointSelect,
    /// `UPDATE … SET abalance = abalance + 1 WHERE aid = $1`, one shard per statement
    PointUpdate,
    /// `SELECT count(*) … WHERE abalance >= 0`, every shard, counts summed by the proxy
    ScatterCount,
    /// 90 % point-select, 10 % point-update
    Mixed,
}

/// How statements travel on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// simple Query message with the key inlined in the text
    Simple,
    /// Parse/Bind/Execute of an unnamed statement for every call
    Extended,
    /// one named statement per connection, prepared once, then Bind/Execute
    Prepared,
}

/// One kind of statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// read one row by key
    Select,
    /// update one row by key
    Update,
    /// count over all shards
    Count,
}

const SELECT: &str = "SELECT abalance FROM bench_accounts WHERE aid = $1";
const UPDATE: &str = "UPDATE bench_accounts SET abalance = abalance + 1 WHERE aid = $1";
const COUNT: &str = "SELECT count(*) FROM bench_accounts WHERE abalance >= 0";

impl Op {
    /// The statement with a `$1` placeholder (none for [`Op::Count`]).
    pub fn sql(self) -> &'static str {
        match self {
            Op::Select => SELECT,
            Op::Update => UPDATE,
            Op::Count => COUNT,
        }
    }

    /// The statement with the key written into the text, for the simple protocol.
    pub fn inline(self, aid: i64) -> String {
        match self {
            Op::Count => COUNT.to_string(),
            op => op.sql().replace("$1", &aid.to_string()),
        }
    }
}

impl Workload {
    /// The next statement: `roll` is uniform in 0..100 and picks within [`Workload::Mixed`].
    pub fn pick(self, roll: u32) -> Op {
        match self {
            Workload::PointSelect => Op::Select,
            Workload::PointUpdate => Op::Update,
            Workload::ScatterCount => Op::Count,
            Workload::Mixed if roll < 90 => Op::Select,
            Workload::Mixed => Op::Update,
        }
    }
}

/// The statements one connection prepared for [`Protocol::Prepared`].
pub struct Prepared {
    select: Statement,
    update: Statement,
    count: Statement,
}

impl Prepared {
    /// Prepare the three statements on `client`.
    pub async fn new(client: &Client) -> Result<Prepared, tokio_postgres::Error> {
        Ok(Prepared {
            select: client.prepare(SELECT).await?,
            update: client.prepare(UPDATE).await?,
            count: client.prepare(COUNT).await?,
        })
    }
}

/// Run one statement of `workload` with a random key in 1..=rows.
pub async fn step(
    client: &Client,
    workload: Workload,
    protocol: Protocol,
    prepared: Option<&Prepared>,
    rows: u64,
    rng: &mut impl Rng,
) -> Result<(), tokio_postgres::Error> {
    let op = workload.pick(rng.random_range(0..100));
    let aid = rng.random_range(1..=rows.min(i64::MAX as u64)) as i64;
    match (protocol, prepared) {
        (Protocol::Simple, _) => {
            client.simple_query(&op.inline(aid)).await?;
        }
        (Protocol::Prepared, Some(p)) => {
            match op {
                Op::Select => client.query(&p.select, &[&aid]).await?,
                Op::Update => client.query(&p.update, &[&aid]).await?,
                Op::Count => client.query(&p.count, &[]).await?,
            };
        }
        // Extended, or prepared without statements (not reached): a fresh unnamed
        // statement per call.
        (Protocol::Extended | Protocol::Prepared, _) => {
            match op {
                Op::Count => client.query(op.sql(), &[]).await?,
                _ => client.query(op.sql(), &[&aid]).await?,
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_is_ninety_percent_selects() {
        let selects = (0..100)
            .filter(|&r| Workload::Mixed.pick(r) == Op::Select)
            .count();
        assert_eq!(selects, 90);
        assert_eq!(Workload::Mixed.pick(95), Op::Update);
        assert_eq!(Workload::PointUpdate.pick(0), Op::Update);
        assert_eq!(Workload::ScatterCount.pick(50), Op::Count);
    }

    #[test]
    fn simple_protocol_inlines_the_key() {
        assert_eq!(
            Op::Select.inline(42),
            "SELECT abalance FROM bench_accounts WHERE aid = 42"
        );
        assert_eq!(
            Op::Update.inline(7),
            "UPDATE bench_accounts SET abalance = abalance + 1 WHERE aid = 7"
        );
        assert_eq!(Op::Count.inline(7), COUNT);
    }
}
