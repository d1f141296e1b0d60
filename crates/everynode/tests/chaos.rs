//! Chaos soak, run by `cargo xtask chaos` (ignored by `cargo test`: it takes most of an hour).
//!
//! On a cluster of its own: three `everynode controller --leader-elect` replicas (the shipped
//! RBAC, the default 15-second Lease) and a set on `EVERYNODE_CHAOS_NODES` nodes. Rolling updates
//! follow one another while nodes join and leave every few seconds and the leader is SIGKILLed
//! `EVERYNODE_CHAOS_KILLS` times, started again in turn as a restarted container (same identity)
//! and as a replacement pod (a new identity). An outside watcher checks every pod event: no node
//! ever runs two live pods of one revision, and no more of the nodes that stay than
//! `maxUnavailable` (10 % of the nodes present, rounded up) lack a Ready pod. Every rollout must
//! converge. Then a soak of `EVERYNODE_CHAOS_SOAK_MINUTES` without kills (rollouts and node
//! churn go on) samples the leader's resident memory. The figures go to stdout and, as markdown,
//! to `EVERYNODE_CHAOS_REPORT` when set.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use everynode_api::DaemonSet;
use everynode_testkit::ledger::WatchedLedger;
use everynode_testkit::{LocalCluster, TestEnv, eventually};

mod common;

use common::{Replica, agent_set, apply_set, holder, ready_pods_on, start_replica};

/// The shipped default (`--lease-seconds`).
const LEASE_SECONDS: u64 = 15;
/// Nodes that join, and as many that leave, every [`CHURN_PERIOD`].
const CHURN_STEP: usize = 5;
const CHURN_PERIOD: Duration = Duration::from_secs(10);
/// The leader is SIGKILLed this often while a rollout runs.
const KILL_PERIOD: Duration = Duration::from_secs(20);
/// Longest a rollout may take, kills included.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the leader's memory is sampled during the soak.
const RSS_PERIOD: Duration = Duration::from_secs(15);
/// A new rollout starts this often during the soak.
const SOAK_ROLLOUT_PERIOD: Duration = Duration::from_secs(180);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

fn image(revision: u32) -> String {
    format!("agent:v{revision}")
}

/// Whether the set runs `revision` everywhere: every node that stays has a Ready pod of it, and
/// the status counts every desired node updated and available at the current generation.
async fn converged(env: &TestEnv, stable: usize, revision: u32) -> Result<(), String> {
    let ready = ready_pods_on(env, &image(revision)).await;
    let set = env
        .api::<DaemonSet>()
        .get("agent")
        .await
        .map_err(|e| e.to_string())?;
    let status = set.status.unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let done = ready >= stable
        && status.observed_generation == set.metadata.generation
        && status.updated_number_scheduled == Some(desired)
        && status.number_available == Some(desired);
    if done {
        Ok(())
    } else {
        Err(format!(
            "{ready} Ready pods of v{revision}; status: {desired} desired, {:?} updated, {:?} available",
            status.updated_number_scheduled, status.number_available
        ))
    }
}

/// Nodes joining and leaving until stopped: every period `CHURN_STEP` new nodes join and the
/// oldest churn nodes leave, so that about `2 × CHURN_STEP` come and go at any time.
fn churn(env: Arc<TestEnv>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut present: VecDeque<String> = VecDeque::new();
        let mut moves = 0;
        while !stop.load(Ordering::SeqCst) {
            present.extend(env.create_nodes_with(CHURN_STEP, |_| {}).await);
            while present.len() > 2 * CHURN_STEP {
                if let Some(name) = present.pop_front() {
                    env.remove_node(&name).await;
                }
            }
            moves += 2 * CHURN_STEP;
            tokio::time::sleep(CHURN_PERIOD).await;
        }
        for name in present {
            env.remove_node(&name).await;
        }
        moves
    })
}

/// The controller replicas: SIGKILL the leader, start it again as a standby.
struct Replicas {
    env: Arc<TestEnv>,
    running: Vec<Replica>,
    /// Seconds from each kill until a live replica renewed the Lease, and whether the killed
    /// identity came back (a restarted container) rather than a new one (a replacement pod).
    takeovers: Vec<(f64, bool)>,
}

impl Replicas {
    async fn start(env: Arc<TestEnv>) -> Self {
        let mut running = Vec::new();
        for identity in ["chaos-a", "chaos-b", "chaos-c"] {
            running.push(start_replica(&env, identity, LEASE_SECONDS, None).await);
        }
        Self {
            env,
            running,
            takeovers: Vec::new(),
        }
    }

    async fn leader(&self) -> Option<usize> {
        let holder = holder(&self.env).await?;
        self.running.iter().position(|r| r.identity == holder)
    }

    /// Kills the leader and starts it again, as a restarted container (same identity: it takes
    /// the Lease back at once) or as a replacement pod (a new identity: a standby takes the
    /// Lease after a Lease duration), in turn. Records the seconds until a live replica renews
    /// the Lease.
    async fn kill_leader(&mut self) {
        let Some(index) = self.leader().await else {
            return;
        };
        let killed_renewal = renewal(&self.env).await;
        let identity = self.running[index].identity.clone();
        let _ = self.running[index].child.start_kill();
        let _ = self.running[index].child.wait().await;
        let killed = Instant::now();
        let restarted = if self.takeovers.len().is_multiple_of(2) {
            identity.clone()
        } else {
            format!(
                "{}-{}",
                identity.split('-').take(2).collect::<Vec<_>>().join("-"),
                self.takeovers.len()
            )
        };
        self.running[index] = start_replica(&self.env, &restarted, LEASE_SECONDS, None).await;
        let env = self.env.clone();
        eventually(
            "a live replica to renew the Lease",
            Duration::from_secs(120),
            || async {
                match renewal(&env).await {
                    now if now != killed_renewal => Ok(()),
                    now => Err(format!("Lease still {now:?}")),
                }
            },
        )
        .await;
        self.takeovers
            .push((killed.elapsed().as_secs_f64(), restarted == identity));
    }

    /// The leader's process ID.
    async fn leader_pid(&self) -> Option<u32> {
        self.running[self.leader().await?].child.id()
    }
}

/// The Lease's holder and last renewal (the killed leader's stays until a live replica writes).
async fn renewal(env: &TestEnv) -> Option<(String, String)> {
    let lease = env
        .api::<k8s_openapi::api::coordination::v1::Lease>()
        .get_opt("everynode-controller")
        .await
        .ok()??;
    let spec = lease.spec?;
    Some((spec.holder_identity?, format!("{:?}", spec.renew_time?)))
}

/// Resident memory of a process in MiB, from `/proc/<pid>/status`.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Samples the memory of `pid` every [`RSS_PERIOD`] in the background.
struct RssSampler {
    samples: Arc<std::sync::Mutex<Vec<(f64, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

fn sample_rss(pid: u32) -> RssSampler {
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = samples.clone();
    let start = Instant::now();
    let task = tokio::spawn(async move {
        loop {
            if let Some(mib) = rss_mib(pid) {
                let minutes = start.elapsed().as_secs_f64() / 60.0;
                kept.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((minutes, mib));
            }
            tokio::time::sleep(RSS_PERIOD).await;
        }
    });
    RssSampler { samples, task }
}

impl RssSampler {
    fn abort(&self) {
        self.task.abort();
    }

    /// (minutes since the start, MiB) of every sample.
    fn samples(&self) -> Vec<(f64, f64)> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Rolls out `revision` and waits for it, SIGKILLing the leader a few seconds in and then every
/// [`KILL_PERIOD`] while it runs, up to `kills_left` times. Returns the seconds to converge.
async fn roll_out(
    env: &TestEnv,
    replicas: &mut Replicas,
    stable: usize,
    revision: u32,
    kills_left: &mut u64,
) -> f64 {
    let start = Instant::now();
    apply_set(env, &agent_set(env, &image(revision))).await;
    // The first kill 1 to 4 s into the rollout (it has begun replacing pods), then every period.
    let first_kill = Duration::from_secs(1 + *kills_left % 4);
    let mut next_kill = Instant::now() + first_kill;
    loop {
        let state = match converged(env, stable, revision).await {
            Ok(()) => return start.elapsed().as_secs_f64(),
            Err(state) => state,
        };
        assert!(
            start.elapsed() < ROLLOUT_TIMEOUT,
            "rollout of v{revision} did not converge in {ROLLOUT_TIMEOUT:?}: {state}"
        );
        if *kills_left > 0 && Instant::now() >= next_kill {
            replicas.kill_leader().await;
            *kills_left -= 1;
            next_kill = Instant::now() + KILL_PERIOD;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
#[ignore = "a soak of most of an hour: cargo xtask chaos"]
async fn chaos_soak() {
    let nodes = setting("EVERYNODE_CHAOS_NODES", 1000) as usize;
    let kills = setting("EVERYNODE_CHAOS_KILLS", 20);
    let soak = Duration::from_secs(60 * setting("EVERYNODE_CHAOS_SOAK_MINUTES", 30));
    let began = Instant::now();

    let cluster = LocalCluster::start(0, false).await;
    let env = Arc::new(TestEnv::on(cluster.info().clone(), "chaos").await);
    everynode_testkit::install_crd(&env.client()).await;
    let stable: BTreeSet<String> = env
        .create_nodes_with(nodes, |_| {})
        .await
        .into_iter()
        .collect();
    // 10 % of the nodes present, rounded up as upstream does: the churn adds up to 10 nodes.
    let max_unavailable = (nodes + 2 * CHURN_STEP).div_ceil(10);
    let mut replicas = Replicas::start(env.clone()).await;
    let ledger = WatchedLedger::start(env.api(), "app=agent");
    let (mut kills_left, mut revision) = (kills, 1);
    let first = roll_out(&env, &mut replicas, nodes, revision, &mut 0).await;
    ledger.lock().check_budget(stable.clone(), max_unavailable);

    // Chaos: rollouts one after the other, nodes churning, the leader killed now and then.
    let stop_churn = Arc::new(AtomicBool::new(false));
    let churning = churn(env.clone(), stop_churn.clone());
    let mut rollouts = Vec::new();
    while kills_left > 0 {
        revision += 1;
        rollouts.push(roll_out(&env, &mut replicas, nodes, revision, &mut kills_left).await);
    }
    let chaos_done = began.elapsed();

    // Soak: no more kills; a rollout every few minutes; the leader's memory sampled.
    let soak_start = Instant::now();
    let sampling = sample_rss(replicas.leader_pid().await.expect("a leader"));
    let mut soak_rollouts = Vec::new();
    while soak_start.elapsed() < soak {
        let next = Instant::now() + SOAK_ROLLOUT_PERIOD;
        revision += 1;
        soak_rollouts.push(roll_out(&env, &mut replicas, nodes, revision, &mut 0).await);
        let end = (soak_start + soak).min(next);
        tokio::time::sleep_until(end.into()).await;
    }
    sampling.abort();
    let rss = sampling.samples();
    stop_churn.store(true, Ordering::SeqCst);
    let moves = churning.await.expect("the churn task");
    revision += 1;
    let last = roll_out(&env, &mut replicas, nodes, revision, &mut 0).await;

    let (events, violations) = {
        let seen = ledger.lock();
        (seen.events(), seen.violations().to_vec())
    };
    let report = Report {
        nodes,
        kills: replicas.takeovers.clone(),
        first,
        rollouts,
        soak_rollouts,
        last,
        moves,
        events,
        violations: violations.len(),
        rss,
        chaos_minutes: chaos_done.as_secs_f64() / 60.0,
        total_minutes: began.elapsed().as_secs_f64() / 60.0,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = std::env::var_os("EVERYNODE_CHAOS_REPORT") {
        std::fs::write(&path, &markdown).expect("write the chaos report");
    }
    assert!(
        violations.is_empty(),
        "invariants broken: {:#?}",
        &violations[..violations.len().min(20)]
    );
    assert_eq!(report.kills.len() as u64, kills, "not every kill was made");
    assert!(
        report.rss_growth() < 1.25,
        "resident memory grew: {:?}",
        report.rss
    );
    drop(replicas);
    drop(ledger);
    drop(env);
    cluster.down().await;
}

/// What the soak measured.
struct Report {
    nodes: usize,
    kills: Vec<(f64, bool)>,
    first: f64,
    rollouts: Vec<f64>,
    soak_rollouts: Vec<f64>,
    last: f64,
    moves: usize,
    events: usize,
    violations: usize,
    /// (minutes into the soak, MiB).
    rss: Vec<(f64, f64)>,
    chaos_minutes: f64,
    total_minutes: f64,
}

impl Report {
    /// Median RSS of the soak's last fifth over that of its first fifth (1.0: flat).
    fn rss_growth(&self) -> f64 {
        let fifth = (self.rss.len() / 5).max(1);
        let median = |samples: &[(f64, f64)]| {
            let mut v: Vec<f64> = samples.iter().map(|s| s.1).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let (head, tail) = (
            &self.rss[..fifth.min(self.rss.len())],
            &self.rss[self.rss.len().saturating_sub(fifth)..],
        );
        median(tail) / median(head)
    }

    fn markdown(&self) -> String {
        let stats = |v: &[f64]| -> String {
            if v.is_empty() {
                return "–".into();
            }
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            format!(
                "{:.1} / {:.1} / {:.1}",
                s[0],
                s[s.len() / 2],
                s[s.len() - 1]
            )
        };
        let rss: Vec<f64> = self.rss.iter().map(|s| s.1).collect();
        let mut out = String::new();
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| nodes (stay) | {} |", self.nodes);
        let _ = writeln!(out, "| node joins + leaves | {} |", self.moves);
        let _ = writeln!(out, "| leader SIGKILLs | {} |", self.kills.len());
        let (restarted, replaced): (Vec<_>, Vec<_>) = self.kills.iter().partition(|k| k.1);
        let seconds = |kills: &[&(f64, bool)]| kills.iter().map(|k| k.0).collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "| leader killed, restarted (same identity): s until it renews the Lease (min / median / max) | {} ({}) |",
            stats(&seconds(&restarted)),
            restarted.len()
        );
        let _ = writeln!(
            out,
            "| leader killed, replaced (new identity): s until a standby holds the Lease | {} ({}) |",
            stats(&seconds(&replaced)),
            replaced.len()
        );
        let _ = writeln!(out, "| create, s | {:.1} |", self.first);
        let _ = writeln!(
            out,
            "| rollouts under kills (each converged) | {} |",
            self.rollouts.len()
        );
        let _ = writeln!(
            out,
            "| rollout under kills, s (min / median / max) | {} |",
            stats(&self.rollouts)
        );
        let _ = writeln!(
            out,
            "| rollouts in the soak, s (min / median / max) | {} ({}) |",
            stats(&self.soak_rollouts),
            self.soak_rollouts.len()
        );
        let _ = writeln!(
            out,
            "| last rollout (churn stopped), s | {:.1} |",
            self.last
        );
        let _ = writeln!(out, "| pod events checked | {} |", self.events);
        let _ = writeln!(
            out,
            "| duplicates + budget breaches | {} |",
            self.violations
        );
        let _ = writeln!(
            out,
            "| leader RSS in the soak, MiB (min / median / max) | {} ({} samples) |",
            stats(&rss),
            rss.len()
        );
        let _ = writeln!(
            out,
            "| RSS, median of the last fifth ÷ the first fifth | {:.2} |",
            self.rss_growth()
        );
        let _ = writeln!(
            out,
            "| chaos phase / whole run, min | {:.1} / {:.1} |",
            self.chaos_minutes, self.total_minutes
        );
        out
    }
}
