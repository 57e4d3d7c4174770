//! Workloads with checkers (ARCHITECTURE §7), each with FoundationDB's three phases:
//! `setup` (initial data, once), `step` (one transaction of one client process, recorded),
//! and `check` (final reads once the faults have healed, and the verdict on everything
//! recorded). Every writing transaction also writes a unique marker key, so the harness
//! checks for every workload that each acknowledged commit is present at the end and no
//! failed one is ([`crate::run`]).

pub mod bank;
pub mod list_append;
pub mod register;

use std::future::Future;

use bytes::Bytes;
use journaldb::{Client, Transaction};

use crate::recorder::ClientCtx;

/// Which workload a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Transfers between accounts; audits check the total.
    Bank,
    /// Transactions appending to and reading lists; an Elle history, checked.
    ListAppend,
    /// Read-increment-write counters; reads checked against real time.
    Register,
}

impl WorkloadKind {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Bank => "bank",
            WorkloadKind::ListAppend => "list-append",
            WorkloadKind::Register => "register",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WorkloadKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bank" => Ok(WorkloadKind::Bank),
            "list-append" => Ok(WorkloadKind::ListAppend),
            "register" => Ok(WorkloadKind::Register),
            _ => Err(format!(
                "unknown workload {s:?}; known: bank, list-append, register"
            )),
        }
    }
}

/// What a checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Violations of a guarantee journaldb makes: the seed fails.
    pub failures: Vec<String>,
    /// Violations the run's faults are allowed to cause (real-time order under a clock
    /// that leaves its bound): reported, not failures.
    pub expected: Vec<String>,
}

impl Verdict {
    /// A verdict with these failures and nothing expected.
    pub fn failing(failures: Vec<String>) -> Self {
        Verdict {
            failures,
            expected: Vec::new(),
        }
    }
}

/// Reads `keys` in `tx`, in order.
pub async fn read_keys(
    tx: &Transaction,
    keys: impl IntoIterator<Item = Bytes>,
) -> journaldb::Result<Vec<Option<Bytes>>> {
    let mut values = Vec::new();
    for key in keys {
        values.push(tx.get(key).await?);
    }
    Ok(values)
}

/// A workload: setup, one step per transaction, check.
pub trait Workload: Send + Sync + 'static {
    /// Writes the initial data. Called once, by one client, before any step; retried by
    /// the caller on a retryable error, so it must be idempotent.
    fn setup(&self, client: &Client) -> impl Future<Output = journaldb::Result<()>>;

    /// Runs and records one transaction of the process `ctx` names.
    fn step(&self, client: &Client, ctx: &mut ClientCtx) -> impl Future<Output = ()>;

    /// Reads the final state (faults healed) and judges the run. An error means the final
    /// state could not be read yet; the caller retries.
    fn check(
        &self,
        client: &Client,
        ctx: &mut ClientCtx,
        realtime_may_break: bool,
    ) -> impl Future<Output = journaldb::Result<Verdict>>;

    /// Every key the workload writes: the liveness check makes sure each one accepts a
    /// write again once the faults have healed (no vote left pending for good).
    fn keys(&self) -> Vec<Bytes>;

    /// The history in Elle's list-append format, if the workload keeps one.
    fn elle_history(&self) -> Option<String> {
        None
    }
}
