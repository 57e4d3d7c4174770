//! `journaldb-sim`: runs seeded simulations of a journaldb cluster under faults and checks
//! them (`run`), or replays one seed with its event trace (`replay`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use journaldb_sim::{
    FaultKind, FaultSet, PlantedBug, RunOptions, RunReport, Schedule, WorkloadKind,
};

#[derive(Parser)]
#[command(
    name = "journaldb-sim",
    about = "Deterministic simulation of a journaldb cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a range of seeds and prints a summary; exits non-zero if any seed fails.
    Run {
        /// bank, list-append or register.
        #[arg(long)]
        workload: WorkloadKind,
        /// Comma-separated fault kinds, `all` or `none`.
        #[arg(long, default_value = "all")]
        faults: FaultSet,
        /// Seeds `A..B`, both ends included (or one seed).
        #[arg(long, value_parser = parse_seeds)]
        seeds: (u64, u64),
        /// Write each seed's history (list-append: Elle's format) into this directory.
        #[arg(long)]
        history_out: Option<PathBuf>,
        /// Plant a bug on purpose (its name, as `journaldb_proto::PlantedBug` lists them:
        /// skip-conflict-check, ack-before-durable, serve-without-replay, …).
        #[arg(long)]
        plant: Option<PlantedBug>,
        /// A seed that commits fewer transactions fails (CI: 100).
        #[arg(long, default_value_t = 0)]
        min_commits: u64,
        /// Replicas of each journal: 1, or 3 (a Raft group per partition on every node).
        #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
        replicas: usize,
        /// A named schedule against the leaders of replicated journals (needs
        /// `--replicas 3`): leader-crash, deposed-leader, figure-8, election-crash,
        /// minority-partition, decide-churn, coordinator-crash, client-clock-ahead,
        /// skew-at-bound.
        #[arg(long)]
        schedule: Option<Schedule>,
    },
    /// Runs one seed and prints its report as one JSON line: what `run` starts, in a fresh
    /// process, for each seed of a sweep.
    #[command(hide = true)]
    Seed {
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        workload: WorkloadKind,
        #[arg(long)]
        faults: FaultSet,
        #[arg(long)]
        plant: Option<PlantedBug>,
        #[arg(long)]
        history_out: Option<PathBuf>,
        #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
        replicas: usize,
        #[arg(long)]
        schedule: Option<Schedule>,
    },
    /// Runs one seed; with `--trace` prints its events in simulated time only, so two
    /// replays of a seed print identical bytes.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// bank, list-append or register.
        #[arg(long)]
        workload: WorkloadKind,
        /// Comma-separated fault kinds, `all` or `none`.
        #[arg(long, default_value = "all")]
        faults: FaultSet,
        /// Plant a bug.
        #[arg(long)]
        plant: Option<PlantedBug>,
        /// Print the event trace.
        #[arg(long)]
        trace: bool,
        /// Replicas of each journal: 1, or 3.
        #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
        replicas: usize,
        /// A named schedule (needs `--replicas 3`).
        #[arg(long)]
        schedule: Option<Schedule>,
    },
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let a: u64 = a.parse().map_err(|_| format!("{a:?} is not a seed"))?;
    let b: u64 = b.parse().map_err(|_| format!("{b:?} is not a seed"))?;
    if b < a {
        return Err(format!("the range {s} is empty"));
    }
    Ok((a, b))
}

/// A schedule aims at Raft leaders: it needs replicated journals.
fn check_schedule(options: &RunOptions) -> Result<(), String> {
    match options.schedule {
        Some(schedule) if options.replicas == 1 => Err(format!(
            "--schedule {schedule} aims at the leaders of replicated journals: add --replicas 3"
        )),
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            workload,
            faults,
            seeds,
            history_out,
            plant,
            min_commits,
            replicas,
            schedule,
        } => run(
            RunOptions {
                seed: seeds.0,
                workload,
                faults,
                planted: plant,
                replicas,
                schedule,
            },
            seeds,
            history_out,
            min_commits,
        ),
        Command::Seed {
            seed,
            workload,
            faults,
            plant,
            history_out,
            replicas,
            schedule,
        } => one_seed(
            RunOptions {
                seed,
                workload,
                faults,
                planted: plant,
                replicas,
                schedule,
            },
            history_out,
        ),
        Command::Replay {
            seed,
            workload,
            faults,
            plant,
            trace,
            replicas,
            schedule,
        } => {
            let options = RunOptions {
                seed,
                workload,
                faults,
                planted: plant,
                replicas,
                schedule,
            };
            if let Err(e) = check_schedule(&options) {
                eprintln!("journaldb-sim: {e}");
                return ExitCode::from(2);
            }
            let report = journaldb_sim::run(&options);
            let mut out = std::io::stdout().lock();
            if trace {
                for line in &report.trace {
                    let _ = writeln!(out, "{line}");
                }
            }
            let _ = writeln!(out, "{}", verdict_line(&report));
            for f in &report.failures {
                let _ = writeln!(out, "  FAIL {f}");
            }
            for e in &report.expected {
                let _ = writeln!(out, "  expected under clock-bound-violation: {e}");
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn verdict_line(r: &RunReport) -> String {
    format!(
        "seed {}: {} ({} commits, {} read-only, {:.1} simulated s)",
        r.seed,
        if r.passed() { "ok" } else { "FAILED" },
        r.commits,
        r.reads,
        r.simulated.as_secs_f64()
    )
}

/// `--replicas`: 1, or 3 (every node of the simulated cluster).
fn parse_replicas(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ (1 | 3)) => Ok(n),
        _ => Err(format!(
            "{text:?}: 1 (single-replica journals) or 3 (every node)"
        )),
    }
}

/// Runs seeds `first..=last` of `base` (its seed is replaced by each).
fn run(
    base: RunOptions,
    (first, last): (u64, u64),
    history_out: Option<PathBuf>,
    min_commits: u64,
) -> ExitCode {
    if let Err(e) = check_schedule(&base) {
        eprintln!("journaldb-sim: {e}");
        return ExitCode::from(2);
    }
    if let Some(dir) = &history_out
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("journaldb-sim: creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "wall time of the whole sweep, for the summary only; never inside a run"
    )]
    let started = std::time::Instant::now();
    let mut simulated = Duration::ZERO;
    let (mut commits, mut reads, mut fewest) = (0u64, 0u64, u64::MAX);
    let mut aborts = std::collections::BTreeMap::<String, u64>::new();
    let mut fired = std::collections::BTreeMap::<FaultKind, u64>::new();
    let mut failing = Vec::new();
    let mut expected = 0usize;
    for seed in first..=last {
        let options = RunOptions {
            seed,
            ..base.clone()
        };
        let mut report = run_in_own_process(&options, history_out.as_deref());
        if report.commits < min_commits {
            report.failures.push(format!(
                "only {} commits, fewer than --min-commits {min_commits}",
                report.commits
            ));
        }
        println!("{}", verdict_line(&report));
        simulated += report.simulated;
        commits += report.commits;
        reads += report.reads;
        fewest = fewest.min(report.commits);
        for (k, n) in &report.aborts {
            *aborts.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &report.fired {
            *fired.entry(*k).or_default() += n;
        }
        expected += report.expected.len();
        if !report.passed() {
            for f in &report.failures {
                println!("  FAIL {f}");
            }
            failing.push(options);
        }
    }
    let wall = started.elapsed();
    let seeds = last - first + 1;
    println!();
    let (workload, faults, planted) = (base.workload, &base.faults, base.planted);
    println!("workload          {workload}");
    println!("faults            {faults}");
    if base.replicas != 1 {
        println!("replicas          {}", base.replicas);
    }
    if let Some(schedule) = base.schedule {
        println!("schedule          {schedule}");
    }
    if let Some(bug) = planted {
        println!("planted bug       {bug}");
    }
    println!("seeds             {seeds} ({first}..{last})");
    println!("commits           {commits} (fewest in one seed: {fewest})");
    println!("read-only         {reads}");
    let aborts_text: Vec<String> = aborts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("aborts by kind    {}", none_if_empty(&aborts_text));
    // Enabled kinds, and those a schedule used.
    let fired_text: Vec<String> = FaultKind::ALL
        .iter()
        .filter(|k| faults.has(**k) || fired.contains_key(k))
        .map(|k| format!("{k} {}", fired.get(k).copied().unwrap_or(0)))
        .collect();
    println!("faults fired      {}", none_if_empty(&fired_text));
    println!(
        "checker verdicts  {} passed, {} failed{}",
        seeds - failing.len() as u64,
        failing.len(),
        if expected > 0 {
            format!(" ({expected} real-time violations expected under clock-bound-violation)")
        } else {
            String::new()
        }
    );
    println!(
        "speed             {:.1} simulated s in {:.1} wall s ({:.2}× real time, {:.2} wall s per seed)",
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        wall.as_secs_f64() / seeds as f64
    );
    let silent: Vec<&str> = FaultKind::ALL
        .iter()
        .filter(|k| faults.has(**k) && !fired.contains_key(k))
        .map(|k| k.token())
        .collect();
    if !silent.is_empty() {
        println!(
            "FAIL: enabled fault kinds never fired: {}",
            silent.join(", ")
        );
    }
    if failing.is_empty() {
        return if silent.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    println!();
    println!("failing seeds, each replayed by:");
    for options in &failing {
        println!("  {}", options.replay_command());
    }
    ExitCode::FAILURE
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Runs `options` in a fresh process (`journaldb-sim seed …`), so that every seed of a
/// sweep runs exactly as its replay command does: tokio numbers tasks from a
/// process-wide counter, and a seed run after others in one process could take another
/// path after a host restart (docs/SIMULATION.md). A child that dies without a report is a
/// failure of the seed.
fn run_in_own_process(options: &RunOptions, history_out: Option<&std::path::Path>) -> RunReport {
    let failed = |why: String| RunReport {
        seed: options.seed,
        failures: vec![why],
        ..RunReport::default()
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(format!("cannot find this program to run the seed: {e}")),
    };
    let mut child = std::process::Command::new(exe);
    child.args([
        "seed",
        "--seed",
        &options.seed.to_string(),
        "--workload",
        &options.workload.to_string(),
        "--faults",
        &options.faults.to_string(),
    ]);
    if let Some(bug) = options.planted {
        child.args(["--plant", &bug.to_string()]);
    }
    child.args(["--replicas", &options.replicas.to_string()]);
    if let Some(schedule) = options.schedule {
        child.args(["--schedule", &schedule.to_string()]);
    }
    if let Some(dir) = history_out {
        child.arg("--history-out").arg(dir);
    }
    let output = match child.output() {
        Ok(output) => output,
        Err(e) => return failed(format!("cannot start the seed's process: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A report counts only from a process that then exited cleanly: one that printed a
    // report and died afterwards did not finish the seed.
    let report = output
        .status
        .success()
        .then(|| stdout.lines().last().map(parse_report))
        .flatten();
    match report {
        Some(Ok(report)) => report,
        Some(Err(e)) => failed(format!("unreadable report: {e}")),
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            failed(format!(
                "the seed's process died ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        }
    }
}

/// `journaldb-sim seed`: one run; writes its history if asked; its report on one line.
fn one_seed(options: RunOptions, history_out: Option<PathBuf>) -> ExitCode {
    let report = journaldb_sim::run(&options);
    if let (Some(dir), Some(history)) = (&history_out, &report.history) {
        let path = dir.join(format!("{}-seed-{}.jsonl", options.workload, options.seed));
        if let Err(e) = std::fs::write(&path, history) {
            eprintln!("journaldb-sim: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let fired: serde_json::Map<String, serde_json::Value> = report
        .fired
        .iter()
        .map(|(k, n)| (k.token().to_owned(), (*n).into()))
        .collect();
    let line = serde_json::json!({
        "seed": report.seed,
        "commits": report.commits,
        "reads": report.reads,
        "simulated_ns": report.simulated.as_nanos() as u64,
        "aborts": report.aborts,
        "fired": fired,
        "failures": report.failures,
        "expected": report.expected,
    });
    println!("{line}");
    ExitCode::SUCCESS
}

/// The report a `journaldb-sim seed` process printed.
fn parse_report(line: &str) -> Result<RunReport, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let number = |key: &str| v[key].as_u64().ok_or(format!("no {key}"));
    let strings = |key: &str| -> Result<Vec<String>, String> {
        v[key]
            .as_array()
            .ok_or(format!("no {key}"))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{key}: not a string"))
            })
            .collect()
    };
    let counts = |key: &str| -> Result<Vec<(String, u64)>, String> {
        v[key]
            .as_object()
            .ok_or(format!("no {key}"))?
            .iter()
            .map(|(k, n)| {
                Ok((
                    k.clone(),
                    n.as_u64().ok_or(format!("{key}.{k}: not a count"))?,
                ))
            })
            .collect()
    };
    let mut fired = std::collections::BTreeMap::new();
    for (token, n) in counts("fired")? {
        let kind = FaultKind::ALL
            .iter()
            .find(|k| k.token() == token)
            .ok_or(format!("unknown fault kind {token}"))?;
        fired.insert(*kind, n);
    }
    Ok(RunReport {
        seed: number("seed")?,
        commits: number("commits")?,
        reads: number("reads")?,
        simulated: Duration::from_nanos(number("simulated_ns")?),
        aborts: counts("aborts")?.into_iter().collect(),
        fired,
        failures: strings("failures")?,
        expected: strings("expected")?,
        ..RunReport::default()
    })
}
