//! The log store and state machine against openraft's storage test suite, on
//! real RocksDB in a temp dir. The suite runs on shard 5 of a database whose
//! neighbouring shards hold data, so shard prefixes are checked too.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use sundial_raft::store::{LogStore, NodeStore, StateMachine};
use sundial_raft::types::{StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let store = NodeStore::open(dir.path())
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::error(e)))?;
        // Neighbours with entries of their own, which the suite must never see.
        for neighbour in [4, 6] {
            let mut log = store.log_store(neighbour);
            let entries = (1..=30).map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i));
            log.blocking_append(entries).await?;
            log.save_vote(&openraft::Vote::new(9, 9)).await?;
        }
        let sm = store
            .state_machine(5)
            .map_err(|e| openraft::StorageIOError::write(openraft::AnyError::error(e)))?;
        Ok((dir, store.log_store(5), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite failed: {e}");
    }
}
