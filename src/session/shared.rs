//! State shared by all sessions of one proxy: configuration, the current shard map,
//! pools, the plan cache, and what was learned from the shards. Passed as `Arc`, never
//! a global.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::auth::Verifier;
use crate::backend::Pools;
use crate::config::{Config, ShardMap, UserConfig};
use crate::router::KeyOrdinals;
use crate::sql::PlanCache;

/// Statements kept in the plan cache.
const PLAN_CACHE_SIZE: usize = 10_000;

/// ParameterStatus name/value pairs reported to clients at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// Everything sessions share.
pub struct Shared {
    /// validated configuration (server settings, users, shards)
    pub config: Arc<Config>,
    /// the current shard map; replaced atomically on reload
    pub map: ArcSwap<ShardMap>,
    /// one pool per shard
    pub pools: Pools,
    /// SQL text → analysis
    pub plans: PlanCache,
    /// SCRAM verifiers by user name
    pub users: HashMap<String, Verifier>,
    /// key column positions learned from the catalog, for INSERT and COPY without a
    /// column list: (position among all columns, position among non-generated columns)
    pub ordinals: RwLock<HashMap<String, (usize, usize)>>,
    /// ParameterStatus values of the default shard, learned at the first login
    pub server_params: RwLock<Option<ServerParams>>,
    /// cancelled when the proxy shuts down
    pub shutdown: CancellationToken,
    /// client cancel keys → the backend process running their statement
    pub cancels: super::cancel::CancelRegistry,
    /// two-phase commits under way in this process (recovery leaves them alone)
    pub in_flight: crate::twophase::InFlight,
}

impl Shared {
    /// Build the shared state for a configuration.
    pub fn new(config: Arc<Config>, shutdown: CancellationToken) -> Shared {
        let users = config
            .users
            .iter()
            .map(|u: &UserConfig| (u.name.clone(), Verifier::from_secret(&u.secret)))
            .collect();
        Shared {
            map: ArcSwap::from_pointee(config.map.clone()),
            pools: Pools::new(&config),
            plans: PlanCache::new(PLAN_CACHE_SIZE),
            users,
            ordinals: RwLock::new(HashMap::new()),
            server_params: RwLock::new(None),
            shutdown,
            cancels: Default::default(),
            in_flight: Default::default(),
            config,
        }
    }

    /// Forget learned key positions (after DDL, which may change column order).
    pub fn forget_ordinals(&self) {
        self.ordinals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A snapshot of the learned key positions, for the router.
pub struct OrdinalSnapshot<'a>(pub &'a HashMap<String, (usize, usize)>);

impl KeyOrdinals for OrdinalSnapshot<'_> {
    fn key_ordinal(&self, table: &str) -> Option<usize> {
        self.0.get(table).map(|p| p.0)
    }

    fn copy_key_ordinal(&self, table: &str) -> Option<usize> {
        self.0.get(table).map(|p| p.1)
    }
}
