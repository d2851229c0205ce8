//! Reads of one shard's local replica: a job by id, and filtered pages.

use rocksdb::{Direction, IteratorMode, ReadOptions};
use serde::{Deserialize, Serialize};

use super::{cf, NodeStore, StoreError};
use crate::codec;
use crate::job::{Job, JobId, JobState, ShardId};
use crate::keys::{job_key, namespace_prefix, prefix_end, queue_prefix, trailing_id, with_id, CF_SM};

/// Which jobs a list wants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    pub namespace: String,
    pub queue: Option<String>,
    pub state: Option<JobState>,
}

/// One page of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// True when the shard may hold more matches after the last job.
    pub more: bool,
}

impl NodeStore {
    /// Reads a job from this node's replica of its shard.
    pub fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let db = self.db();
        match db.get_cf(cf(db, CF_SM), job_key(id))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Lists up to `limit` jobs of one shard matching `filter`, in id order,
    /// starting after `after` when given.
    pub fn list_jobs(
        &self,
        shard: ShardId,
        filter: &JobFilter,
        after: Option<&JobId>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        let db = self.db();
        let prefix = match &filter.queue {
            Some(queue) => queue_prefix(shard, &filter.namespace, queue),
            None => namespace_prefix(shard, &filter.namespace),
        };
        let start = match after {
            // The smallest key after `after`'s own key.
            Some(id) => {
                let mut k = with_id(prefix.clone(), id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        let iter = db.iterator_cf_opt(
            cf(db, CF_SM),
            opts,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut page = JobPage::default();
        for item in iter {
            let (key, state) = item?;
            if let Some(wanted) = filter.state {
                if state.first() != Some(&wanted.code()) {
                    continue;
                }
            }
            if page.jobs.len() == limit {
                page.more = true;
                break;
            }
            let Some(id) = trailing_id(&key) else { continue };
            if let Some(job) = self.get_job(&id)? {
                page.jobs.push(job);
            }
        }
        Ok(page)
    }
}
