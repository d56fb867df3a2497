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
    /// `INSERT … VALUES ($1, 0, 'insert')` with a fresh key above every existing one
    Insert,
    /// `SELECT aid, abalance … ORDER BY abalance DESC, aid LIMIT 10`, every shard, merged
    /// and cut by the proxy
    ScatterTopN,
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
    /// insert one row with a new key
    Insert,
    /// the ten rows with the highest balance, over all shards
    TopN,
}

const SELECT: &str = "SELECT abalance FROM bench_accounts WHERE aid = $1";
const UPDATE: &str = "UPDATE bench_accounts SET abalance = abalance + 1 WHERE aid = $1";
const COUNT: &str = "SELECT count(*) FROM bench_accounts WHERE abalance >= 0";
const INSERT: &str = "INSERT INTO bench_accounts (aid, abalance, filler) VALUES ($1, 0, 'insert')";
/// The statement of [`Workload::ScatterTopN`]; public so tests can run the same text.
pub const TOP_N: &str =
    "SELECT aid, abalance FROM bench_accounts ORDER BY abalance DESC, aid LIMIT 10";

impl Op {
    /// The statement with a `$1` placeholder (none for [`Op::Count`] and [`Op::TopN`]).
    pub fn sql(self) -> &'static str {
        match self {
            Op::Select => SELECT,
            Op::Update => UPDATE,
            Op::Count => COUNT,
            Op::Insert => INSERT,
            Op::TopN => TOP_N,
        }
    }

    /// Whether the statement takes the key as `$1`.
    pub fn takes_key(self) -> bool {
        !matches!(self, Op::Count | Op::TopN)
    }

    /// The statement with the key written into the text, for the simple protocol.
    pub fn inline(self, aid: i64) -> String {
        if self.takes_key() {
            self.sql().replace("$1", &aid.to_string())
        } else {
            self.sql().to_string()
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
            Workload::Insert => Op::Insert,
            Workload::ScatterTopN => Op::TopN,
            Workload::Mixed if roll < 90 => Op::Select,
            Workload::Mixed => Op::Update,
        }
    }
}

/// The statements one connection prepared for [`Protocol::Prepared`]: only those its
/// workload runs, so a target that cannot run one workload can still run the others.
pub struct Prepared {
    statements: Vec<(Op, Statement)>,
}

impl Prepared {
    /// Prepare the statements of `workload` on `client`.
    pub async fn new(
        client: &Client,
        workload: Workload,
    ) -> Result<Prepared, tokio_postgres::Error> {
        let mut statements = Vec::new();
        for op in workload.ops() {
            statements.push((op, client.prepare(op.sql()).await?));
        }
        Ok(Prepared { statements })
    }

    fn get(&self, op: Op) -> Option<&Statement> {
        self.statements
            .iter()
            .find(|(o, _)| *o == op)
            .map(|(_, s)| s)
    }
}

impl Workload {
    /// Every statement kind this workload may run.
    pub fn ops(self) -> Vec<Op> {
        let mut ops: Vec<Op> = Vec::new();
        for roll in 0..100 {
            let op = self.pick(roll);
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
        ops
    }
}

/// Where one client's keys come from during one run.
///
/// Reads and updates draw uniformly from `1..=rows`, the keys `--setup` loads. Inserts
/// use keys above `base`, the largest key in the table (at least `rows`) read just before
/// the run: client `c` of `n` takes `base + 1 + c`, then steps by `n`. The clients'
/// sequences are disjoint, and every run (round, target, invocation) reads a fresh
/// `base`, so inserted keys never collide with each other or with rows already there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    rows: u64,
    next_insert: i64,
    stride: i64,
}

impl Keys {
    /// Keys for client `client` (0-based) of `clients`, inserting above `base`.
    pub fn new(rows: u64, base: i64, client: usize, clients: usize) -> Keys {
        let base = base.max(rows.min(i64::MAX as u64) as i64);
        Keys {
            rows,
            next_insert: base.saturating_add(1).saturating_add(client as i64),
            stride: clients.max(1) as i64,
        }
    }

    /// A random existing key in `1..=rows`.
    pub fn existing(&self, rng: &mut impl Rng) -> i64 {
        rng.random_range(1..=self.rows.clamp(1, i64::MAX as u64)) as i64
    }

    /// The next key to insert; each call returns a new one.
    pub fn fresh(&mut self) -> i64 {
        let k = self.next_insert;
        self.next_insert = self.next_insert.saturating_add(self.stride);
        k
    }
}

/// Run one statement of `workload`: a random existing key, or a fresh one for inserts.
pub async fn step(
    client: &Client,
    workload: Workload,
    protocol: Protocol,
    prepared: Option<&Prepared>,
    keys: &mut Keys,
    rng: &mut impl Rng,
) -> Result<(), tokio_postgres::Error> {
    let op = workload.pick(rng.random_range(0..100));
    let aid = if op == Op::Insert {
        keys.fresh()
    } else {
        keys.existing(rng)
    };
    let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
        if op.takes_key() { &[&aid] } else { &[] };
    match (protocol, prepared.and_then(|p| p.get(op))) {
        (Protocol::Simple, _) => {
            client.simple_query(&op.inline(aid)).await?;
        }
        (Protocol::Prepared, Some(statement)) => {
            client.query(statement, params).await?;
        }
        // Extended, or prepared without the statement (not reached): a fresh unnamed
        // statement per call.
        (Protocol::Extended | Protocol::Prepared, _) => {
            client.query(op.sql(), params).await?;
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
        assert_eq!(
            Op::Insert.inline(12),
            "INSERT INTO bench_accounts (aid, abalance, filler) VALUES (12, 0, 'insert')"
        );
        assert_eq!(Op::TopN.inline(3), TOP_N);
    }

    #[test]
    fn workloads_name_their_statements() {
        assert_eq!(Workload::Mixed.ops(), vec![Op::Select, Op::Update]);
        assert_eq!(Workload::Insert.ops(), vec![Op::Insert]);
        assert_eq!(Workload::ScatterTopN.ops(), vec![Op::TopN]);
        assert_eq!(Workload::ScatterTopN.pick(99), Op::TopN);
    }

    #[test]
    fn insert_keys_of_clients_never_collide_and_stay_above_rows() {
        // table holds 1..=100: base is at least rows even when max(aid) is lower
        let mut seen = std::collections::HashSet::new();
        for c in 0..3 {
            let mut k = Keys::new(100, 40, c, 3);
            for _ in 0..50 {
                let key = k.fresh();
                assert!(key > 100, "{key}");
                assert!(seen.insert(key), "client {c} repeated {key}");
            }
        }
        assert_eq!(seen.len(), 150);
        assert!(seen.contains(&101) && seen.contains(&250));
        // a later run starts above what the earlier one inserted
        let mut later = Keys::new(100, 250, 0, 2);
        assert_eq!((later.fresh(), later.fresh()), (251, 253));
    }

    #[test]
    fn existing_keys_are_within_rows() {
        let k = Keys::new(5, 0, 0, 1);
        let mut rng = rand::rng();
        for _ in 0..200 {
            let key = k.existing(&mut rng);
            assert!((1..=5).contains(&key), "{key}");
        }
    }
}
