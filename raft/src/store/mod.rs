//! One RocksDB per node, shared by every shard's Raft log and state machine.
//!
//! Durability contract: a log append is acknowledged to openraft (its
//! `LogFlushed` callback) only after the WAL holding it is fsynced. Appends
//! write to RocksDB without sync (so they are readable at once) and then ask
//! the [`WalSyncer`] for a sync; the syncer thread coalesces every request that
//! arrived meanwhile — from any shard — into one `fsync` (group commit).
//! State machine writes are not synced: on restart the state machine resumes
//! from its persisted applied id and openraft re-applies committed entries.

pub mod events;
mod log;
mod read;
mod sm;
mod syncer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

pub use log::LogStore;
pub use read::{JobFilter, JobPage, LeaseEntry, ShardDigest, TimerEntry};
pub use sm::StateMachine;
pub use syncer::WalSyncer;

use crate::job::ShardId;
use crate::keys::{CF_LOG, CF_META, CF_SM};

/// Storage failures outside openraft's own error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb at {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(#[from] crate::codec::CodecError),
    #[error("io at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The node's database and the services every shard shares.
pub struct NodeStore {
    db: Arc<DB>,
    syncer: WalSyncer,
    dir: PathBuf,
    listeners: Arc<events::Listeners>,
}

impl NodeStore {
    /// Opens (or creates) the node's RocksDB under `dir/db`.
    pub fn open(dir: &Path) -> Result<Arc<NodeStore>, StoreError> {
        let db_path = dir.join("db");
        std::fs::create_dir_all(dir.join("snapshots")).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Keep the process's memory bounded: a few small memtables per family.
        opts.set_write_buffer_size(32 << 20);
        opts.set_max_write_buffer_number(3);
        opts.increase_parallelism(2);
        // WAL records stay in RocksDB's buffer until the WalSyncer flushes and
        // fsyncs them: one write(2) per group commit instead of one per write.
        // Nothing is acknowledged before that flush, and state machine writes
        // that were still buffered at a crash are re-applied from the log.
        opts.set_manual_wal_flush(true);
        let cfs = [CF_LOG, CF_META, CF_SM].map(|name| {
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if name == CF_SM {
                // Every applied submit first checks that its id is new; bloom
                // filters answer "absent" without reading each L0 file.
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                table.set_cache_index_and_filter_blocks(true);
                cf_opts.set_block_based_table_factory(&table);
            }
            ColumnFamilyDescriptor::new(name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, &db_path, cfs).map_err(|source| StoreError::Open {
            path: db_path.clone(),
            source,
        })?;
        let db = Arc::new(db);
        let syncer = WalSyncer::start(&db);
        Ok(Arc::new(NodeStore {
            db,
            syncer,
            dir: dir.to_path_buf(),
            listeners: Arc::default(),
        }))
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// The Raft log of one shard.
    pub fn log_store(&self, shard: ShardId) -> LogStore {
        LogStore::new(self.db.clone(), self.syncer.clone(), shard)
    }

    /// The state machine of one shard, with its applied state loaded.
    pub fn state_machine(&self, shard: ShardId) -> Result<StateMachine, StoreError> {
        StateMachine::open(
            self.db.clone(),
            self.syncer.clone(),
            shard,
            self.dir.join("snapshots"),
            self.listeners.clone(),
        )
    }

    /// Registers (or with `None` removes) the one listener of a shard's
    /// state machine events (see [`events`]).
    pub fn set_listener(&self, shard: ShardId, listener: Option<events::Listener>) {
        self.listeners.set(shard, listener);
    }

    /// Makes everything written so far durable and stops RocksDB's background
    /// flushes and compactions, so the process can exit without racing them.
    pub fn shutdown(&self) {
        if let Err(e) = self.db.flush_wal(true) {
            tracing::error!(error = %e, "final wal sync failed");
        }
        self.db.cancel_all_background_work(true);
    }

    /// The data directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    // The three families are created by `NodeStore::open`; their absence is a
    // programming error, not an input error.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} missing"))
}
