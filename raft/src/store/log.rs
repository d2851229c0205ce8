//! One shard's Raft log in the shared `log` column family.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};

use super::{cf, WalSyncer};
use crate::codec;
use crate::job::ShardId;
use crate::keys::{
    log_index, log_key, meta_key, shard_end, CF_LOG, CF_META, META_COMMITTED, META_PURGED, META_VOTE,
};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The Raft log of one shard. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: WalSyncer,
    shard: ShardId,
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_logs(AnyError::error(e)).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(AnyError::error(e)).into()
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, syncer: WalSyncer, shard: ShardId) -> LogStore {
        LogStore { db, syncer, shard }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, tag: u8) -> Result<Option<T>, StorageError> {
        let raw = self
            .db
            .get_cf(cf(&self.db, CF_META), meta_key(self.shard, tag))
            .map_err(read_err)?;
        raw.map(|bytes| codec::decode(&bytes).map_err(read_err))
            .transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, tag: u8, value: &T, sync: bool) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(write_err)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db
            .put_cf_opt(cf(&self.db, CF_META), meta_key(self.shard, tag), bytes, &opts)
            .map_err(write_err)
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(shard_end(self.shard));
        let end = shard_end(self.shard);
        let mut iter = self.db.iterator_cf_opt(
            cf(&self.db, CF_LOG),
            opts,
            IteratorMode::From(&end, Direction::Reverse),
        );
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(read_err)?;
                if !key.starts_with(&self.shard.to_be_bytes()) {
                    return Ok(None);
                }
                Ok(Some(codec::decode(&value).map_err(read_err)?))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut opts = ReadOptions::default();
        match range.end_bound() {
            Bound::Included(&i) => match i.checked_add(1) {
                Some(end) => opts.set_iterate_upper_bound(log_key(self.shard, end).to_vec()),
                None => opts.set_iterate_upper_bound(shard_end(self.shard)),
            },
            Bound::Excluded(&i) => opts.set_iterate_upper_bound(log_key(self.shard, i).to_vec()),
            Bound::Unbounded => opts.set_iterate_upper_bound(shard_end(self.shard)),
        }
        let from = log_key(self.shard, start);
        let iter = self.db.iterator_cf_opt(
            cf(&self.db, CF_LOG),
            opts,
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let entry: Entry = codec::decode(&value).map_err(read_err)?;
            debug_assert_eq!(log_index(&key), Some(entry.log_id.index));
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta::<Option<LogId>>(META_PURGED)?.flatten();
        let last = self.last_entry()?.map(|e| e.log_id).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// The vote is on disk before this returns: a node must never vote twice
    /// in a term, also across a crash.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = codec::encode(vote).map_err(write_err)?;
        self.db
            .put_cf(cf(&self.db, CF_META), meta_key(self.shard, META_VOTE), bytes)
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e)))?;
        self.syncer
            .sync()
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(META_VOTE)
    }

    /// Not synced on its own: losing the latest committed id only means
    /// re-learning it from the leader; it rides on the next log sync.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(META_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let log_cf = cf(&self.db, CF_LOG);
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(write_err)?;
            batch.put_cf(log_cf, log_key(self.shard, entry.log_id.index), bytes);
        }
        // Written now so readers see the entries at once; durable once the
        // syncer's fsync covers it, which is when openraft hears about it.
        self.db.write(batch).map_err(write_err)?;
        self.syncer
            .sync_then(move |result| callback.log_io_completed(result));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            log_key(self.shard, log_id.index).to_vec(),
            shard_end(self.shard),
        );
        self.db.write(batch).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let bytes = codec::encode(&Some(log_id)).map_err(write_err)?;
        batch.put_cf(cf(&self.db, CF_META), meta_key(self.shard, META_PURGED), bytes);
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            log_key(self.shard, 0).to_vec(),
            log_key(self.shard, log_id.index.saturating_add(1)).to_vec(),
        );
        self.db.write(batch).map_err(write_err)
    }
}
