//! The persisted state of a rebalance, next to the map file (`<map>.rebalance.json`).
//!
//! Most of a rebalance's progress is already in the map file: every finished cutover
//! gave its slots to their destination there. What the file cannot say is written here
//! before each step: the target (so a re-run continues towards the same map, whatever
//! arguments it is given), and the cutover in flight with the ids of its prepared
//! transactions (so a re-run after a crash commits or rolls them back — commit exactly
//! when the map file already names the destination). Copies in progress are not kept: a
//! re-run drops the staging data and copies the remaining slots again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mapfile::write_atomically;

/// Where a cutover stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutoverStage {
    /// slots held, transactions being prepared; not decided (a re-run rolls back)
    Preparing,
    /// both sides prepared; decided by the map file (a re-run commits when the map file
    /// names the destination, rolls back otherwise)
    Prepared,
}

/// A cutover in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cutover {
    /// shard losing the slots
    pub from: String,
    /// shard gaining them
    pub to: String,
    /// the slots
    pub slots: Vec<u32>,
    /// prepared-transaction id on the source
    pub source_gid: String,
    /// prepared-transaction id on the destination
    pub destination_gid: String,
    /// how far it got
    pub stage: CutoverStage,
}

/// A rebalance in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// random id, part of every prepared-transaction id
    pub id: String,
    /// when it started (seconds since the Unix epoch)
    pub started: u64,
    /// shards added: name and URL
    pub add: Vec<(String, String)>,
    /// shards removed
    pub remove: Vec<String>,
    /// target owner of every slot, as shard name → inclusive ranges
    pub target: Vec<(String, Vec<(u32, u32)>)>,
    /// the cutover in flight, if any
    pub cutover: Option<Cutover>,
    /// the step last finished, for `rebalance status`
    pub step: String,
    /// cutovers finished so far
    pub cutovers_done: u32,
}

impl State {
    /// Target owner (shard name) of every slot.
    pub fn target_owner(&self, slots: u32) -> Vec<Option<&str>> {
        let mut owner = vec![None; slots as usize];
        for (name, ranges) in &self.target {
            for &(lo, hi) in ranges {
                for slot in lo..=hi.min(slots.saturating_sub(1)) {
                    owner[slot as usize] = Some(name.as_str());
                }
            }
        }
        owner
    }
}

/// The state file of a map file.
pub fn path_for(map: &Path) -> PathBuf {
    let name = map
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shardmap.toml".into());
    map.with_file_name(format!("{name}.rebalance.json"))
}

/// Take the map's rebalance lock (`<map>.rebalance.lock`), held until the returned
/// file is dropped or the process ends.
pub fn lock(map: &Path) -> Result<std::fs::File, String> {
    let name = map
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shardmap.toml".into());
    let path = map.with_file_name(format!("{name}.rebalance.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another `pgshard rebalance apply` is running on this map (it holds {})",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

/// Whether a rebalance holds the map's lock right now.
pub fn is_running(map: &Path) -> bool {
    matches!(lock(map), Err(e) if e.contains("is running"))
}

/// Read the state, if a rebalance is in progress.
pub fn load(path: &Path) -> Result<Option<State>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not a rebalance state file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Write the state atomically.
pub fn save(path: &Path, state: &State) -> Result<(), String> {
    let text = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    write_atomically(path, &(text + "\n")).map_err(|e| format!("{}: {e}", path.display()))
}

/// Remove the state once the rebalance is finished.
pub fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("shardmap.toml"));
        assert!(path.ends_with("shardmap.toml.rebalance.json"));
        assert_eq!(load(&path).unwrap(), None);
        let state = State {
            id: "ab12".into(),
            started: 1,
            add: vec![("s2".into(), "postgres://h/app".into())],
            remove: vec![],
            target: vec![("s0".into(), vec![(0, 1)]), ("s2".into(), vec![(2, 3)])],
            cutover: Some(Cutover {
                from: "s0".into(),
                to: "s2".into(),
                slots: vec![2, 3],
                source_gid: "a".into(),
                destination_gid: "b".into(),
                stage: CutoverStage::Prepared,
            }),
            step: "copy".into(),
            cutovers_done: 0,
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state.clone()));
        assert_eq!(
            state.target_owner(4),
            vec![Some("s0"), Some("s0"), Some("s2"), Some("s2")]
        );
        remove(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        std::fs::write(&path, "{").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .contains("not a rebalance state file")
        );
    }
}
