//! The connected clients, for `SHOW CLIENTS` and the client gauge.
//!
//! A session registers when its connection is accepted and is removed when the
//! [`ClientGuard`] drops, whatever way the session ends. The session updates its state
//! with one relaxed store per message, so listing never touches the data path's locks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// before the login finished
    Login = 0,
    /// between statements, outside a transaction
    Idle = 1,
    /// a statement is running
    Active = 2,
    /// between statements inside a transaction (holding backend connections)
    InTransaction = 3,
    /// inside a failed transaction, waiting for ROLLBACK
    FailedTransaction = 4,
}

impl ClientState {
    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Active,
            3 => ClientState::InTransaction,
            4 => ClientState::FailedTransaction,
            _ => ClientState::Login,
        }
    }

    /// The name shown in `SHOW CLIENTS` (as `pg_stat_activity.state` spells them).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::InTransaction => "idle in transaction",
            ClientState::FailedTransaction => "idle in transaction (aborted)",
        }
    }
}

/// One connected client.
#[derive(Debug)]
pub struct ClientInfo {
    /// registry id, in connection order
    pub id: u64,
    /// the client's address (None for in-memory streams)
    pub addr: Option<SocketAddr>,
    /// when the connection was accepted
    pub connected: Instant,
    login: OnceLock<(String, String)>,
    state: AtomicU8,
    /// statements received (simple queries and extended-protocol Syncs)
    pub statements: AtomicU64,
    tls: std::sync::atomic::AtomicBool,
}

impl ClientInfo {
    /// User and database, once logged in.
    pub fn login(&self) -> Option<&(String, String)> {
        self.login.get()
    }

    /// Record the login (first call wins).
    pub fn set_login(&self, user: &str, database: &str) {
        let _ = self.login.set((user.to_owned(), database.to_owned()));
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Change the state.
    #[inline]
    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Whether the connection is encrypted.
    pub fn tls(&self) -> bool {
        self.tls.load(Ordering::Relaxed)
    }

    /// Mark the connection as encrypted.
    pub fn set_tls(&self) {
        self.tls.store(true, Ordering::Relaxed);
    }
}

/// The registry of connected clients.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
}

impl ClientRegistry {
    /// Register a new connection; it stays listed until the guard drops.
    pub fn register(self: &Arc<Self>, addr: Option<SocketAddr>) -> ClientGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            addr,
            connected: Instant::now(),
            login: OnceLock::new(),
            state: AtomicU8::new(ClientState::Login as u8),
            statements: AtomicU64::new(0),
            tls: Default::default(),
        });
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info.clone());
        ClientGuard {
            info,
            registry: self.clone(),
        }
    }

    /// The clients connected now, in connection order.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many clients are connected.
    pub fn count(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A registered client; unregisters on drop.
#[derive(Debug)]
pub struct ClientGuard {
    /// the client's entry
    pub info: Arc<ClientInfo>,
    registry: Arc<ClientRegistry>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.registry
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.info.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_listed_until_their_guard_drops() {
        let registry = Arc::new(ClientRegistry::default());
        let a = registry.register(Some("127.0.0.1:5000".parse().unwrap()));
        let b = registry.register(None);
        a.info.set_login("app", "app");
        a.info.set_state(ClientState::InTransaction);
        let listed = registry.list();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].state(), ClientState::InTransaction);
        assert_eq!(listed[0].login().map(|l| l.0.as_str()), Some("app"));
        assert_eq!(listed[1].state(), ClientState::Login);
        drop(a);
        assert_eq!(registry.count(), 1);
        drop(b);
        assert_eq!(registry.count(), 0);
    }
}
