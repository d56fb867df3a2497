//! Plan cache: SQL text → analysis, so hot statements are parsed once.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use super::lift::{Lifted, lift};
use super::{SharedAnalysis, analyze};

/// A bounded LRU of analyses keyed by SQL text, shared by all sessions.
pub struct PlanCache {
    inner: Mutex<lru::LruCache<Box<str>, SharedAnalysis>>,
}

impl PlanCache {
    /// A cache holding up to `capacity` statements.
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).expect("capacity >= 1");
        PlanCache {
            inner: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    /// The analysis of `sql`, parsing it on a miss.
    pub fn get(&self, sql: &str) -> SharedAnalysis {
        if let Some(hit) = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
        {
            return hit.clone();
        }
        let analysis = Arc::new(analyze(sql));
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(sql.into(), analysis.clone());
        analysis
    }

    /// The constants of `sql` lifted out ([`lift`]) and the analysis of the lifted
    /// shape, cached under the shape's text; `None` when nothing can be lifted.
    pub fn get_lifted(&self, sql: &str) -> Option<(SharedAnalysis, Lifted)> {
        let lifted = lift(sql)?;
        Some((self.get(&lifted.shape), lifted))
    }
}
