//! `journaldb-sim`: runs seeded simulations of a journaldb cluster under faults and checks
//! them (`run`), or replays one seed with its event trace (`replay`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use journaldb_sim::{FaultKind, FaultSet, PlantedBug, RunOptions, RunReport, WorkloadKind};

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
        /// Plant a bug: skip-conflict-check, ack-before-durable or ignore-watermark.
        #[arg(long)]
        plant: Option<PlantedBug>,
        /// A seed that commits fewer transactions fails (CI: 100).
        #[arg(long, default_value_t = 0)]
        min_commits: u64,
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
        } => run(workload, faults, seeds, history_out, plant, min_commits),
        Command::Replay {
            seed,
            workload,
            faults,
            plant,
            trace,
        } => {
            let options = RunOptions {
                seed,
                workload,
                faults,
                planted: plant,
            };
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

fn run(
    workload: WorkloadKind,
    faults: FaultSet,
    (first, last): (u64, u64),
    history_out: Option<PathBuf>,
    planted: Option<PlantedBug>,
    min_commits: u64,
) -> ExitCode {
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
            workload,
            faults: faults.clone(),
            planted,
        };
        let mut report = journaldb_sim::run(&options);
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
        if let (Some(dir), Some(history)) = (&history_out, &report.history) {
            let path = dir.join(format!("{workload}-seed-{seed}.jsonl"));
            if let Err(e) = std::fs::write(&path, history) {
                eprintln!("journaldb-sim: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
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
    println!("workload          {workload}");
    println!("faults            {faults}");
    if let Some(bug) = planted {
        println!("planted bug       {bug}");
    }
    println!("seeds             {seeds} ({first}..{last})");
    println!("commits           {commits} (fewest in one seed: {fewest})");
    println!("read-only         {reads}");
    let aborts_text: Vec<String> = aborts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("aborts by kind    {}", none_if_empty(&aborts_text));
    let fired_text: Vec<String> = FaultKind::ALL
        .iter()
        .filter(|k| faults.has(**k))
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
