//! The history of a run: one JSON object per line, one file per process
//! (the harness, each worker), merged by the checker.
//!
//! Every operation is written once, after it returned, with the time it was
//! invoked (`t0`) and the time it returned (`t1`), ms since the epoch on the
//! one clock every process of a run shares. A worker process exits on
//! purpose only when none of its operations is in flight, so no operation
//! is lost from the history by a crash.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How an operation ended, as its caller saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The server accepted it.
    Ok,
    /// The server definitely refused it (the gRPC code's name and message).
    Refused(String),
    /// No answer: it may or may not have taken effect.
    Unknown(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        *self == Outcome::Ok
    }

    /// Ok, or possibly ok.
    pub fn maybe_ok(&self) -> bool {
        !matches!(self, Outcome::Refused(_))
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// A producer's submit. The payload is the key, so a job names its key.
    Submit {
        key: String,
        t0: i64,
        t1: i64,
        outcome: Outcome,
        /// The id the server answered with (Ok only).
        id: Option<String>,
        /// Shard the server placed it on (Ok only).
        shard: Option<u32>,
        max_attempts: u32,
    },
    /// A lease pushed to a worker.
    Lease {
        worker: String,
        id: String,
        token: u32,
        /// When the worker received it.
        t: i64,
        /// When the shard leader granted it (the leader's clock).
        leased_at_ms: i64,
        deadline_ms: i64,
    },
    /// A worker's heartbeat, completion or failure of one attempt.
    Attempt {
        worker: String,
        op: AttemptOp,
        id: String,
        token: u32,
        t0: i64,
        t1: i64,
        outcome: Outcome,
        /// The lease's deadline after an accepted heartbeat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<i64>,
    },
    /// A worker's stream ended (the node went away) or its process exited:
    /// the node may end the leases it held at once.
    SessionEnd { worker: String, t: i64 },
    /// A linearizable read of a job.
    Observe {
        id: String,
        t0: i64,
        t1: i64,
        state: String,
        attempts: u32,
    },
    /// A schedule the harness created.
    Schedule { id: String, every_ms: u64, t: i64 },
    /// A fault, from injection to heal.
    Fault {
        kind: String,
        target: String,
        t0: i64,
        t1: i64,
    },
    /// Time from a leader's kill to the first acknowledged submit on its
    /// shard.
    Failover { shard: u32, node: u64, t0: i64, t1: i64 },
}

/// What a worker did to an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOp {
    Heartbeat,
    Complete,
    Fail,
}

/// Appends events to one file, a line per `write(2)` so a crash of the
/// process loses nothing already recorded.
pub struct HistoryWriter {
    file: Mutex<File>,
}

impl HistoryWriter {
    pub fn open(path: &Path) -> std::io::Result<HistoryWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(HistoryWriter {
            file: Mutex::new(file),
        })
    }

    pub fn record(&self, event: &Event) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        write_line(&mut file, event);
    }

    /// Records an event as this process's last and exits with `code` while
    /// still holding the file: no other thread of the process records
    /// anything after it. (A worker that crashes on purpose records its
    /// session's end this way; a lease that reaches it after that line is
    /// never seen by it, as if lost in transit, rather than seen by a
    /// process the history says is gone.)
    /// The event is made once the file is held, so its times are later
    /// than those of every line before it.
    pub fn record_and_exit(&self, event: impl FnOnce() -> Event, code: i32) -> ! {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        write_line(&mut file, &event());
        std::process::exit(code)
    }
}

fn write_line(file: &mut File, event: &Event) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    if let Err(e) = file.write_all(&line) {
        eprintln!("chaos: cannot write history: {e}");
    }
}

/// Reads every `*.jsonl` file in `dir`. A torn last line (a process killed
/// mid-write) is skipped; any other bad line is an error.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    for path in paths {
        let lines: Vec<String> = BufReader::new(File::open(&path)?)
            .lines()
            .collect::<Result<_, _>>()?;
        let last = lines.len().saturating_sub(1);
        for (n, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Event>(line) {
                Ok(event) => events.push(event),
                Err(_) if n == last => {}
                Err(e) => anyhow::bail!("{}:{}: bad history line: {e}", path.display(), n + 1),
            }
        }
    }
    Ok(events)
}

/// Milliseconds since the epoch, the clock every event is stamped with.
pub use sundial_raft::job::now_ms;
