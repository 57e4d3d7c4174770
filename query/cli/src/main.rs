//! The `journaldb` command line.
//!
//! `journaldb (--data DIR | --cluster URL) put KEY VALUE | get KEY | del KEY | scan … | stats |
//! shell [--json]`, `journaldb serve --config node.toml`, and
//! `journaldb cluster start | stop | status [--dir DIR]` (a local cluster). Each command runs in its own
//! transaction, on an embedded database in DIR or on the cluster a node at URL belongs to.
//! Errors are one readable line on stderr and a non-zero exit code (1 for database errors
//! and a missing key, 2 for usage errors).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use journaldb::{Database, ScanRange, Store};
use journaldb_proto::Timestamp;

/// glibc's malloc took a fifth of a cluster node's CPU under load; mimalloc gives the
/// replicated cluster about a fifth more commits/s (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod launcher;
mod shell;

/// journaldb: a journal-backed transactional key-value store.
#[derive(Parser, Debug)]
#[command(name = "journaldb", version, about)]
struct Cli {
    /// Data directory of an embedded database (created if missing). Every command but
    /// `serve` needs it or `--cluster`.
    #[arg(long, value_name = "DIR", conflicts_with = "cluster")]
    data: Option<PathBuf>,
    /// A node of a running cluster (e.g. http://127.0.0.1:7001), instead of `--data`.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// The CA certificate (PEM) of a cluster that uses TLS (`--cluster https://…`).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Set KEY to VALUE (`-` reads the value from standard input, for large or binary values).
    Put {
        /// The key.
        key: String,
        /// The value, or `-` for standard input.
        value: String,
    },
    /// Print the value of KEY (exit code 1 if it is not set).
    Get {
        /// The key.
        key: String,
    },
    /// Delete KEY.
    Del {
        /// The key.
        key: String,
    },
    /// Print keys and values of a prefix or range, one `key<TAB>value` per line.
    Scan {
        /// Every key starting with this (default: every key).
        #[arg(long, conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// First key of the range (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// End of the range (exclusive).
        #[arg(long)]
        end: Option<String>,
        /// Most rows to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Descending order.
        #[arg(long)]
        reverse: bool,
        /// Read as of this timestamp (nanoseconds since the Unix epoch).
        #[arg(long, value_name = "TS")]
        as_of: Option<u64>,
    },
    /// Print facts about the database.
    Stats,
    /// An interactive session: begin, get, put, del, scan, commit, rollback (see --help).
    Shell {
        /// Answer every command with one line of JSON.
        #[arg(long)]
        json: bool,
    },
    /// A local cluster on this machine, for trying journaldb out.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Operate a running cluster: the state of its Raft groups.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Run a cluster node: the roles its configuration names, until SIGTERM or ctrl-c.
    Serve {
        /// The node's configuration (TOML; see docs/CLUSTER.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A new replicated cluster's first start: create this node's replica logs (its
        /// data directory is empty). Never give it to a node that has run before: a node
        /// whose data was lost must not rejoin under its old name.
        #[arg(long, conflicts_with = "join")]
        bootstrap: bool,
        /// The first start of a node that replaces a lost one (`journaldb admin replace`
        /// recorded it): read the cluster's topology from the configured peers and create
        /// this node's replica logs empty; the groups' leaders then bring it up to date.
        #[arg(long)]
        join: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AdminAction {
    /// Each partition's Raft group: leader, term, commit index, members, and each
    /// replica's role, applied index and lag (exit code 1 if a node does not answer, a
    /// partition has no leader, or a group stopped).
    Status {
        /// The cluster's directory (its nodes' configurations).
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
    },
    /// Replace a node that is lost for good (its machine or disk) by a new node under a
    /// new name: record it in the metadata group, rewrite the local cluster's
    /// configurations, start the new node (`serve --join`), and swap it in for the old one
    /// in every Raft group once it has caught up. Safe to run again after a failure.
    Replace {
        /// The cluster's directory (its nodes' configurations).
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
        /// The lost node's name.
        #[arg(long)]
        old: String,
        /// The new node's name (never one the cluster had).
        #[arg(long)]
        new: String,
        /// host:port the new node serves on (default: a free port on 127.0.0.1).
        #[arg(long)]
        address: Option<String>,
        /// How long to wait, in seconds, for every group to take the new node in.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Record the replacement and start the new node, then return: each group's
        /// leader finishes the swap on its own once the new node has caught up
        /// (`admin status` shows it).
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterAction {
    /// Start N node processes on 127.0.0.1 and wait until all are healthy.
    Start {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How many partitions (default: one per node).
        #[arg(long)]
        partitions: Option<u32>,
        /// Replicas of each partition's journal (a Raft group each, every node a storage
        /// replica). 1: no replication. R > 1: every journal on the first R nodes, and the
        /// others only storage replicas, which tail the journals from their voters.
        /// Default: every node for 3 to 7 nodes, 3 for more, else 1.
        #[arg(long)]
        replicas: Option<usize>,
        /// Where the nodes' configurations, data and logs go.
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
    },
    /// Stop the cluster in DIR (SIGTERM, then wait).
    Stop {
        /// The cluster's directory.
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
    },
    /// Health of each node of the cluster in DIR (exit code 1 if one is down).
    Status {
        /// The cluster's directory.
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
    },
}

/// Bytes as text: UTF-8 as is, other bytes as `\xNN`.
fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => b
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    (c as char).to_string()
                } else {
                    format!("\\x{c:02x}")
                }
            })
            .collect(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("journaldb: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve {
            config,
            bootstrap,
            join,
        } => return serve(config, *bootstrap, *join).await,
        Command::Admin {
            action:
                AdminAction::Replace {
                    dir,
                    old,
                    new,
                    address,
                    wait,
                    no_wait,
                },
        } => {
            let wait = (!*no_wait).then(|| std::time::Duration::from_secs(*wait));
            admin::replace(dir, old, new, address.as_deref(), wait).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Admin {
            action: AdminAction::Status { dir },
        } => {
            return Ok(if admin::status(dir).await? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Cluster { action } => {
            return match action {
                ClusterAction::Start {
                    nodes,
                    partitions,
                    replicas,
                    dir,
                } => launcher::start(*nodes, *partitions, *replicas, dir)
                    .await
                    .map(|()| ExitCode::SUCCESS),
                ClusterAction::Stop { dir } => {
                    launcher::stop(dir).await.map(|()| ExitCode::SUCCESS)
                }
                ClusterAction::Status { dir } => Ok(if launcher::status(dir).await? {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }),
            };
        }
        _ => {}
    }
    if let Some(url) = &cli.cluster {
        let tls_ca = match &cli.ca {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| anyhow::anyhow!("--ca {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let mut options = journaldb::ClientOptions::default();
        options.tls_ca = tls_ca;
        let client = journaldb::Client::connect_with(url, options).await?;
        return execute(&client, None, cli.command).await;
    }
    let Some(data) = cli.data else {
        eprintln!("journaldb: --data DIR or --cluster URL is required for this command");
        return Ok(ExitCode::from(2));
    };
    if data.exists() && !data.is_dir() {
        anyhow::bail!("--data {} is a file, not a directory", data.display());
    }
    let db = Database::open(&data).await?;
    let result = execute(&db, Some(&db), cli.command).await;
    let closed = db.close().await;
    let code = result?;
    closed?;
    Ok(code)
}

/// Runs one command on `db`; `embedded` is the same database when it is local (for
/// `stats`, which reports its journals and storage).
async fn execute(
    db: &dyn Store,
    embedded: Option<&Database>,
    command: Command,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Put { key, value } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)?;
                Bytes::from(buf)
            } else {
                Bytes::from(value)
            };
            let mut tx = db.begin();
            tx.put(key, value)?;
            let info = tx.commit().await?;
            writeln!(out, "committed at {}", info.commit_ts.as_nanos())?;
        }
        Command::Get { key } => {
            let tx = db.begin();
            match tx.get(key.as_bytes()).await? {
                Some(v) => writeln!(out, "{}", show(&v))?,
                None => {
                    eprintln!("journaldb: key {key:?} not found");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Del { key } => {
            let mut tx = db.begin();
            tx.delete(key)?;
            let info = tx.commit().await?;
            writeln!(out, "committed at {}", info.commit_ts.as_nanos())?;
        }
        Command::Scan {
            prefix,
            start,
            end,
            limit,
            reverse,
            as_of,
        } => {
            let range = match (prefix, start) {
                (Some(p), _) => ScanRange::prefix(p.as_bytes()),
                (None, start) => ScanRange {
                    start: Bytes::from(start.unwrap_or_default()),
                    end: end.map(Bytes::from),
                },
            };
            let tx = match as_of {
                Some(ts) => db.snapshot_at(Timestamp::from_nanos(ts))?,
                None => db.begin(),
            };
            let page = tx.scan(&range, limit.max(1), reverse).await?;
            for (k, v) in page.rows {
                writeln!(out, "{}\t{}", show(&k), show(&v))?;
            }
        }
        Command::Stats => {
            writeln!(out, "partitions\t{}", db.partitions())?;
            let Some(db) = embedded else {
                return Ok(ExitCode::SUCCESS); // a cluster: per-node stats are its nodes'
            };
            let stats = db.stats();
            writeln!(out, "watermark\t{}", stats.watermark.as_nanos())?;
            writeln!(out, "gc_horizon\t{}", stats.gc_horizon.as_nanos())?;
            for (p, j) in stats.journals.iter().enumerate() {
                writeln!(
                    out,
                    "journal-{p}\tfirst_lsn {}\tend_lsn {}\tsegments {}",
                    j.first_lsn.get(),
                    j.end_lsn.get(),
                    j.segments
                )?;
            }
        }
        Command::Shell { json } => {
            drop(out);
            shell::run(db, json).await?;
        }
        Command::Serve { .. } | Command::Cluster { .. } | Command::Admin { .. } => {
            unreachable!("handled before opening a database")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `journaldb serve`: checks the configuration, binds, serves until SIGTERM or ctrl-c, then
/// shuts down gracefully.
async fn serve(path: &std::path::Path, bootstrap: bool, join: bool) -> anyhow::Result<ExitCode> {
    let config = journaldb_node::NodeConfig::load(path)?;
    let listen = config.me().listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {listen}: {e}"))?;
    let name = config.node.clone();
    let node = match (bootstrap, join) {
        (true, _) => journaldb_node::ClusterNode::bootstrap(config, listener).await?,
        (false, true) => journaldb_node::ClusterNode::join(config, listener).await?,
        (false, false) => journaldb_node::ClusterNode::start(config, listener).await?,
    };
    println!("journaldb node {name} serving on {}", node.addr());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A journal that failed (an I/O error) refuses commits until a restart recovers it:
    // exit non-zero so the supervisor restarts the process (fail-stop). A maintenance
    // round that failed is reported and tried again.
    let failed = async {
        let mut check = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            check.tick().await;
            if let Some(e) = node.take_maintenance_error() {
                eprintln!("journaldb node {name}: a maintenance round failed, retrying: {e}");
            }
            if node.is_failed() {
                return;
            }
        }
    };
    let code = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        _ = terminate.recv() => ExitCode::SUCCESS,
        _ = failed => {
            match node.failure() {
                Some(why) => eprintln!("journaldb node {name}: {why}; exiting"),
                None => eprintln!(
                    "journaldb node {name}: a journal or the maintenance loop failed; \
                     exiting so it can be restarted"
                ),
            }
            ExitCode::FAILURE
        }
    };
    println!("journaldb node {name} shutting down");
    // After a failure the poisoned journal's error is the expected one.
    let shut = if code == ExitCode::SUCCESS {
        node.shutdown().await
    } else {
        node.shutdown_within(std::time::Duration::ZERO).await
    };
    if code == ExitCode::SUCCESS {
        shut?;
    }
    Ok(code)
}
