//! Group commit: one thread fsyncs the WAL for every waiting writer at once.

use std::sync::mpsc;
use std::sync::{Arc, Weak};

use rocksdb::DB;

type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Handle to the node's WAL sync thread. Cheap to clone.
#[derive(Clone)]
pub struct WalSyncer {
    tx: mpsc::Sender<Done>,
}

impl WalSyncer {
    /// Starts the sync thread. It runs until every handle is dropped. It holds
    /// the database weakly, so the database closes where its last owner drops
    /// it, never on this thread while the process exits.
    pub fn start(db: &Arc<DB>) -> WalSyncer {
        let db: Weak<DB> = Arc::downgrade(db);
        let (tx, rx) = mpsc::channel::<Done>();
        // Owned by the channel: the thread exits when the last sender drops.
        let spawned = std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                let mut waiting: Vec<Done> = Vec::new();
                while let Ok(first) = rx.recv() {
                    waiting.push(first);
                    // Everything queued while we waited rides on this fsync.
                    waiting.extend(rx.try_iter());
                    let result = match db.upgrade() {
                        Some(db) => db
                            .flush_wal(true)
                            .map_err(|e| std::io::Error::other(e.to_string())),
                        None => Err(std::io::Error::other("database closed")),
                    };
                    for done in waiting.drain(..) {
                        done(match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        });
                    }
                }
            });
        if let Err(e) = spawned {
            // Without this thread no append can ever be acknowledged.
            panic!("cannot start the wal-sync thread: {e}");
        }
        WalSyncer { tx }
    }

    /// Calls `done` once every write issued before this call is on disk.
    pub fn sync_then(&self, done: impl FnOnce(std::io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError(done)) = self.tx.send(Box::new(done)) {
            done(Err(std::io::Error::other("wal-sync thread stopped")));
        }
    }

    /// Waits until every write issued before this call is on disk.
    pub async fn sync(&self) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.sync_then(move |r| {
            let _ = tx.send(r);
        });
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("wal-sync thread stopped")))
    }
}
