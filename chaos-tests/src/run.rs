//! One chaos run: start, load, faults, failover measurement, heal, drain,
//! check.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sundial_sdk::ListJobs;
use tokio::sync::watch;

use crate::checker::{self, FinalJob, FinalSchedule, Replica, World};
use crate::cluster::{self, require_failpoints, Cluster, ClusterSpec, Net, Nodes, ProcNodes};
use crate::docker::{self, DockerNodes};
use crate::history::{self, now_ms, Event, HistoryWriter};
use crate::nemesis::{self, Deck, Heal, Kind};
use crate::worker::NAMESPACE;
use crate::workload::{self, Clients, Load, WORK_QUEUE};

/// What a run does.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub nodes: usize,
    pub shards: u32,
    pub duration: Duration,
    pub seed: u64,
    pub producers: usize,
    pub workers: usize,
    /// Leader kills timed for the failover figure.
    pub failover_kills: usize,
    /// Pause between one fault's heal and the next fault.
    pub gap: Duration,
    /// The sundial binary.
    pub bin: PathBuf,
    /// This binary, started again as `chaos worker`.
    pub me: PathBuf,
    /// Where the run keeps its files.
    pub dir: PathBuf,
    /// Where the nodes run.
    pub mode: Mode,
    /// Producers hold back while this many jobs wait in the work queue:
    /// the backlog stays within what the workers drain once faults stop.
    pub max_backlog: u64,
}

/// Where the nodes of a run live.
#[derive(Clone, Debug)]
pub enum Mode {
    /// `sundial serve` processes in network namespaces on this host.
    Process,
    /// Containers of this image (scripts/build-image.sh builds it).
    Docker { image: String },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Process => "process",
            Mode::Docker { .. } => "docker",
        }
    }
}

/// What a run found.
pub struct RunResult {
    pub report: checker::Report,
    pub faults: BTreeMap<&'static str, u64>,
    pub failovers_ms: Vec<u64>,
    /// Heals after which the cluster took no write within the bound.
    pub write_outages: Vec<String>,
    /// Nodes that exited without the harness killing them.
    pub node_crashes: Vec<String>,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.report.passed() && self.write_outages.is_empty() && self.node_crashes.is_empty()
    }

    pub fn fault_count(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// After a heal, the cluster must take a write within this.
pub const WRITE_BOUND: Duration = Duration::from_secs(10);

struct Workers {
    me: PathBuf,
    dir: PathBuf,
    addrs: Vec<String>,
    seed: u64,
    children: Vec<Child>,
    spawned: u64,
}

impl Workers {
    fn spawn(&mut self, i: usize) -> anyhow::Result<Child> {
        self.spawned += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker{i}.log")))?;
        Command::new(&self.me)
            .arg("worker")
            .args(["--name", &format!("w{i}")])
            .args(["--addrs", &self.addrs.join(",")])
            .arg("--history")
            .arg(self.dir.join("history").join(format!("worker{i}.jsonl")))
            .args([
                "--seed",
                &(self.seed.wrapping_mul(31).wrapping_add(self.spawned)).to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a chaos worker")
    }

    fn start(&mut self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let child = self.spawn(i)?;
            self.children.push(child);
        }
        Ok(())
    }

    /// Restarts workers that exited (they crash on purpose).
    fn respawn_exited(&mut self) -> anyhow::Result<usize> {
        let mut n = 0;
        for i in 0..self.children.len() {
            if let Ok(Some(_)) = self.children[i].try_wait() {
                self.children[i] = self.spawn(i)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn pause(&mut self, i: usize) {
        crate::cluster::signal(self.children[i].id(), "STOP");
    }

    fn resume(&mut self, i: usize) {
        crate::cluster::signal(self.children[i].id(), "CONT");
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            crate::cluster::signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(workers: &Mutex<Workers>) -> MutexGuard<'_, Workers> {
    workers.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts again, every 100 ms, the workers that exited, until `stop`.
async fn keep_workers_running(
    workers: Arc<Mutex<Workers>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    while !*stop.borrow() {
        lock(&workers).respawn_exited()?;
        let _ = tokio::time::timeout(Duration::from_millis(100), stop.changed()).await;
    }
    Ok(())
}

/// Checks that `bin` is a sundial binary with failpoints compiled in.
pub fn check_binary(bin: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin).arg("build-info").output().with_context(|| {
        format!(
            "cannot run {}: build it with `cargo build --release --workspace`",
            bin.display()
        )
    })?;
    require_failpoints(
        &out.stdout,
        &bin.display().to_string(),
        "build it with `cargo build --release --workspace` (chaos-tests turns the feature on)",
    )
}

pub async fn run(opts: RunOpts) -> anyhow::Result<RunResult> {
    if opts.nodes < 3 {
        bail!("--nodes must be at least 3 (a quorum that survives one fault)");
    }
    std::fs::create_dir_all(opts.dir.join("history"))?;
    let tag = (std::process::id() % 200 + 20) as u8;
    let nodes: Box<dyn Nodes> = match &opts.mode {
        Mode::Process => {
            check_binary(&opts.bin)?;
            Box::new(ProcNodes::new(
                Net::create(tag, opts.nodes)?,
                &opts.bin,
                &opts.dir,
            ))
        }
        Mode::Docker { image } => {
            docker::check_image(image)?;
            Box::new(DockerNodes::create(tag, opts.nodes, image, &opts.dir)?)
        }
    };
    let spec = ClusterSpec {
        nodes: opts.nodes,
        shards: opts.shards,
    };
    let mut cluster = Cluster::start(&opts.dir, &spec, nodes)?;
    cluster.wait_healthy(Duration::from_secs(90)).await?;
    let addrs = cluster.addrs();
    let clients = Clients::new(addrs.clone(), Duration::from_secs(3));
    let history = Arc::new(HistoryWriter::open(
        &opts.dir.join("history").join("harness.jsonl"),
    )?);
    let mut rng = StdRng::seed_from_u64(opts.seed);

    let schedules = ["every-1s-a", "every-1s-b"];
    for id in schedules {
        workload::create_schedule(&clients, &history, id, Duration::from_secs(1)).await?;
    }
    let workers = Workers {
        me: opts.me.clone(),
        dir: opts.dir.clone(),
        addrs: addrs.clone(),
        seed: opts.seed,
        children: Vec::new(),
        spawned: 0,
    };
    let workers = Arc::new(Mutex::new(workers));
    lock(&workers).start(opts.workers)?;
    // Workers crash on purpose (1.5 % of jobs); each is started again at
    // once, so the run keeps its worker capacity.
    let (respawn_stop, respawn_stop_rx) = watch::channel(false);
    let respawner = tokio::spawn(keep_workers_running(workers.clone(), respawn_stop_rx));
    let load = Load::start(
        clients.clone(),
        history.clone(),
        opts.producers,
        opts.max_backlog,
        opts.seed,
    );

    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut write_outages = Vec::new();
    let mut node_crashes = Vec::new();
    let mut deck = Deck::new();
    let start = Instant::now();
    let mut probe = 0u64;
    while start.elapsed() < opts.duration {
        for (i, status) in cluster.exited() {
            node_crashes.push(format!("node {} exited by itself ({status})", i + 1));
            cluster.spawn(i)?;
        }
        let kind = deck.draw(&mut rng);
        let t0 = now_ms();
        let (target, heal) = inject(kind, &mut cluster, &workers, &mut rng).await?;
        tokio::time::sleep(nemesis::hold(kind, &mut rng)).await;
        heal_fault(heal, &mut cluster, &mut lock(&workers))?;
        let t1 = now_ms();
        history.record(&Event::Fault {
            kind: kind.name().into(),
            target: target.clone(),
            t0,
            t1,
        });
        *faults.entry(kind.name()).or_default() += 1;
        tracing::info!(fault = kind.name(), %target, "healed");
        // The cluster must take a write again within the bound.
        probe += 1;
        let key = format!("probe-{probe}");
        let healed = Instant::now();
        let deadline = healed + WRITE_BOUND;
        let give_up = move || Instant::now() > deadline;
        let all: Vec<usize> = (0..cluster.len()).collect();
        let acked = workload::submit_until_answered(
            &clients, &history, &mut rng, &key, WORK_QUEUE, 0, &all, &give_up,
        )
        .await;
        if acked.is_none() {
            write_outages.push(format!(
                "no write acknowledged within {WRITE_BOUND:?} after healing {} ({target})",
                kind.name()
            ));
        }
        if let Err(e) = cluster.wait_healthy(Duration::from_secs(30)).await {
            write_outages.push(format!("not healthy 30 s after healing {}: {e}", kind.name()));
        }
        tokio::time::sleep(opts.gap).await;
    }

    let failovers_ms =
        measure_failover(&mut cluster, &clients, &history, &mut rng, opts.failover_kills).await?;

    // Heal everything, stop producing, let every job finish.
    cluster.heal_network()?;
    for i in 0..cluster.len() {
        if !cluster.is_up(i) {
            cluster.spawn(i)?;
        }
    }
    cluster.wait_healthy(Duration::from_secs(60)).await?;
    load.stop(Duration::from_secs(30)).await;
    let final_schedules = pause_schedules(&clients, &schedules).await?;
    wait_all_finished(&clients, Duration::from_secs(180)).await?;
    let _ = respawn_stop.send(true);
    respawner.await??;
    lock(&workers).stop();
    for (i, status) in cluster.exited() {
        node_crashes.push(format!("node {} exited by itself ({status})", i + 1));
        cluster.spawn(i)?;
    }
    let (replicas, unsettled_shards) = settled_digests(&cluster, Duration::from_secs(60)).await;
    let jobs = final_jobs(&clients).await?;
    let world = World {
        jobs,
        schedules: final_schedules,
        replicas,
        unsettled_shards,
    };
    let events = history::read_dir(&opts.dir.join("history"))?;
    let report = checker::check(&events, &world);
    Ok(RunResult {
        report,
        faults,
        failovers_ms,
        write_outages,
        node_crashes,
    })
}

/// Injects one fault; returns its target (for the record) and its heal.
async fn inject(
    kind: Kind,
    cluster: &mut Cluster,
    workers: &Mutex<Workers>,
    rng: &mut StdRng,
) -> anyhow::Result<(String, Heal)> {
    let n = cluster.len();
    let random_shard = rng.random_range(0..cluster.shards);
    Ok(match kind {
        Kind::KillNode => {
            let i = nemesis::random_up(cluster, rng).unwrap_or(0);
            cluster.kill(i);
            (format!("node {}", i + 1), Heal::Restart(vec![i]))
        }
        Kind::KillLeader => {
            let i = cluster.leader_of(random_shard).await.unwrap_or(0);
            cluster.kill(i);
            (
                format!("node {} (leader of shard {random_shard})", i + 1),
                Heal::Restart(vec![i]),
            )
        }
        Kind::PauseNode => {
            let i = nemesis::random_up(cluster, rng).unwrap_or(0);
            cluster.pause(i);
            (format!("node {}", i + 1), Heal::ResumeNode(i))
        }
        Kind::PauseWorker => {
            let mut workers = lock(workers);
            let i = rng.random_range(0..workers.children.len().max(1));
            workers.pause(i);
            (format!("worker {i}"), Heal::ResumeWorker(i))
        }
        Kind::IsolateNode => {
            let i = rng.random_range(0..n);
            let rest: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            cluster.partition(&[i], &rest)?;
            (format!("node {} | others", i + 1), Heal::Network)
        }
        Kind::IsolateLeader => {
            let i = cluster.leader_of(random_shard).await.unwrap_or(0);
            let rest: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            cluster.partition(&[i], &rest)?;
            (
                format!("node {} (leader of shard {random_shard}) | others", i + 1),
                Heal::Network,
            )
        }
        Kind::SplitMinority => {
            let (small, big) = nemesis::minority(n, rng);
            cluster.partition(&small, &big)?;
            let names = |v: &[usize]| {
                v.iter()
                    .map(|i| (i + 1).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            (format!("{} | {}", names(&small), names(&big)), Heal::Network)
        }
        Kind::ActorPanic => {
            let i = nemesis::random_up(cluster, rng).unwrap_or(0);
            cluster.arm_failpoint(i, "shard-actor-write=1*panic(chaos: injected actor panic)")?;
            (format!("node {} shard actor", i + 1), Heal::Nothing)
        }
        Kind::KillAll => {
            for i in 0..n {
                cluster.kill(i);
            }
            ("all nodes".into(), Heal::Restart((0..n).collect()))
        }
    })
}

fn heal_fault(heal: Heal, cluster: &mut Cluster, workers: &mut Workers) -> anyhow::Result<()> {
    match heal {
        Heal::Restart(nodes) => {
            for i in nodes {
                if !cluster.is_up(i) {
                    cluster.spawn(i)?;
                }
            }
        }
        Heal::ResumeNode(i) => cluster.resume(i),
        Heal::ResumeWorker(i) => workers.resume(i),
        Heal::Network => cluster.heal_network()?,
        Heal::Nothing => {}
    }
    Ok(())
}

/// Kills the leader of a shard `kills` times; each time, the time from the
/// kill to the first acknowledged submit on that shard (keys chosen to hash
/// to it), from four clients on the surviving nodes.
async fn measure_failover(
    cluster: &mut Cluster,
    clients: &Clients,
    history: &Arc<HistoryWriter>,
    rng: &mut StdRng,
    kills: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for k in 0..kills {
        let shard = (k as u32) % cluster.shards;
        // Each kill starts from a settled cluster: the previous victim back,
        // caught up, and leaders agreed (rebalancing included).
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        cluster.wait_caught_up(Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some(leader) = cluster.leader_of(shard).await else {
            bail!("shard {shard} has no leader before failover kill {k}");
        };
        let survivors: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
        let t0 = now_ms();
        cluster.kill(leader);
        let (done_tx, done_rx) = watch::channel(None::<i64>);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..4u64 {
            let (clients, history, survivors) = (clients.clone(), history.clone(), survivors.clone());
            let (done_tx, done_rx) = (done_tx.clone(), done_rx.clone());
            let seed = rng.random::<u64>();
            let shard_count = cluster.shards;
            tasks.spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut n = 0u64;
                while done_rx.borrow().is_none() {
                    let key = loop {
                        n += 1;
                        let key = format!("failover-{k}-{c}-{n}");
                        let mut bytes = NAMESPACE.as_bytes().to_vec();
                        bytes.push(0);
                        bytes.extend_from_slice(key.as_bytes());
                        if sundial_raft::job::shard_for_key(&bytes, shard_count) == shard {
                            break key;
                        }
                    };
                    let stop = || done_rx.borrow().is_some();
                    let acked = workload::submit_until_answered(
                        &clients, &history, &mut rng, &key, WORK_QUEUE, 0, &survivors, &stop,
                    )
                    .await;
                    if acked.is_some() {
                        done_tx.send_if_modified(|d| {
                            if d.is_none() {
                                *d = Some(now_ms());
                                true
                            } else {
                                false
                            }
                        });
                    }
                }
            });
        }
        let mut waiting = done_rx.clone();
        let t1 = match tokio::time::timeout(Duration::from_secs(30), waiting.wait_for(|d| d.is_some())).await
        {
            Ok(Ok(d)) => (*d).unwrap_or(t0),
            _ => bail!(
                "no submit on shard {shard} within 30 s of killing its leader (node {})",
                leader + 1
            ),
        };
        while tasks.join_next().await.is_some() {}
        history.record(&Event::Failover {
            shard,
            node: leader as u64 + 1,
            t0,
            t1,
        });
        out.push((t1 - t0).max(0) as u64);
        tracing::info!(shard, node = leader + 1, ms = t1 - t0, "failover");
        cluster.spawn(leader)?;
    }
    Ok(out)
}

/// Pauses the schedules (no firing while the run drains) and returns them
/// as the cluster holds them.
async fn pause_schedules(clients: &Clients, ids: &[&str]) -> anyhow::Result<Vec<FinalSchedule>> {
    let mut out = Vec::new();
    for id in ids {
        let mut tries = 0;
        let schedule = loop {
            tries += 1;
            let i = tries % clients.len();
            let answer = match clients.get(i).await {
                Ok(mut c) => c.pause_schedule(NAMESPACE, id).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(s) => break s,
                Err(e) if tries > 50 => bail!("cannot pause schedule {id}: {e}"),
                Err(_) => {
                    clients.forget(i);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let every_ms = match schedule.spec.as_ref().and_then(|s| s.rule.clone()) {
            Some(sundial_sdk::proto::schedule_spec::Rule::EveryMs(ms)) => ms,
            _ => 0,
        };
        out.push(FinalSchedule {
            id: id.to_string(),
            every_ms,
            fired: schedule.fired,
        });
    }
    Ok(out)
}

/// Waits until no job of the run is waiting or leased.
async fn wait_all_finished(clients: &Clients, within: Duration) -> anyhow::Result<()> {
    use sundial_sdk::proto::JobState;
    let deadline = Instant::now() + within;
    loop {
        let mut open = 0usize;
        let mut answered = true;
        for state in [JobState::Scheduled, JobState::Ready, JobState::Leased] {
            let list = ListJobs {
                namespace: NAMESPACE.into(),
                state: Some(state),
                page_size: 1,
                ..Default::default()
            };
            match clients.get(0).await {
                Ok(mut c) => match c.list_jobs(list).await {
                    Ok(page) => open += page.jobs.len(),
                    Err(_) => answered = false,
                },
                Err(_) => answered = false,
            }
        }
        if answered && open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("jobs still open {within:?} after the faults stopped");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each replica's digest at a moment when all replicas of each shard
/// applied the same index; shards that never got there are returned apart.
async fn settled_digests(cluster: &Cluster, within: Duration) -> (Vec<Replica>, Vec<u32>) {
    let deadline = Instant::now() + within;
    let mut last: HashMap<u32, Vec<Replica>> = HashMap::new();
    loop {
        let mut by_shard: HashMap<u32, Vec<Replica>> = HashMap::new();
        for addr in cluster.addrs() {
            let Ok(client) = cluster::connect(&addr, Duration::from_secs(2)).await else {
                continue;
            };
            // Digesting a whole shard takes longer than a call.
            let mut client = client.with_timeout(Duration::from_secs(10));
            if let Ok(answer) = client.shard_digests().await {
                for d in answer.shards {
                    by_shard.entry(d.shard).or_default().push(Replica {
                        shard: d.shard,
                        node: answer.node_id,
                        applied_index: d.applied_index,
                        digest: d.digest,
                    });
                }
            }
        }
        let replicas_per_shard = cluster.len().min(3);
        let settled = |v: &Vec<Replica>| {
            v.len() == replicas_per_shard && v.iter().all(|r| r.applied_index == v[0].applied_index)
        };
        for (shard, v) in by_shard {
            if settled(&v) || !last.get(&shard).is_some_and(settled) {
                last.insert(shard, v);
            }
        }
        let all_settled = (0..cluster.shards).all(|s| last.get(&s).is_some_and(settled));
        if all_settled || Instant::now() > deadline {
            let unsettled: Vec<u32> = (0..cluster.shards)
                .filter(|s| !last.get(s).is_some_and(settled))
                .collect();
            let replicas = last.into_values().flatten().collect();
            return (replicas, unsettled);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every job of the run, read from the shard leaders.
async fn final_jobs(clients: &Clients) -> anyhow::Result<Vec<FinalJob>> {
    let mut jobs = Vec::new();
    let mut token = String::new();
    let mut client = clients.get(0).await?;
    loop {
        let page = client
            .list_jobs(ListJobs {
                namespace: NAMESPACE.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .context("listing the run's jobs")?;
        for j in page.jobs {
            jobs.push(FinalJob {
                key: j.idempotency_key.clone(),
                state: checker::state_from_proto(j.state),
                attempts: j.attempts,
                max_attempts: j.retry.as_ref().map(|r| r.max_attempts).unwrap_or(0),
                schedule_id: j.schedule_id.clone(),
                fire_ms: j
                    .headers
                    .get("sundial-fire-ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                result: String::from_utf8_lossy(&j.result).into_owned(),
                id: j.id,
            });
        }
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        token = page.next_page_token;
    }
}

/// The summary line.
pub fn summary(opts: &RunOpts, result: &RunResult) -> String {
    let r = &result.report;
    let (p50, p99, max) = percentiles(&result.failovers_ms);
    format!(
        "chaos: nodes={} duration={} faults={} acked={} lost={} phantom={} dup_completions={} lease_violations={} \
         diverged_shards={} backward_states={} attempts_exceeded={} schedule_violations={} write_outages={} \
         node_crashes={} failover_p50_ms={p50} failover_p99_ms={p99} failover_max_ms={max} mode={} seed={} result={}",
        opts.nodes,
        humantime::format_duration(opts.duration),
        result.fault_count(),
        r.acked,
        r.lost.count,
        r.phantom.count,
        r.dup_completions.count,
        r.lease_violations.count,
        r.diverged.count,
        r.backward.count,
        r.attempts.count,
        r.schedules.count,
        result.write_outages.len(),
        result.node_crashes.len(),
        opts.mode.name(),
        opts.seed,
        if result.passed() { "PASS" } else { "FAIL" }
    )
}

/// p50, p99 and max (nearest rank); zeros when empty.
pub fn percentiles(values: &[u64]) -> (u64, u64, u64) {
    if values.is_empty() {
        return (0, 0, 0);
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.50), rank(0.99), v[v.len() - 1])
}
