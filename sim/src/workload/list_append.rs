//! List-append (Elle's workload): each transaction appends unique values to, or reads,
//! a few lists. Every invocation and completion is recorded in Elle's list-append format;
//! the in-house checker ([`crate::elle`]) finds dependency cycles (G0, G1a/b/c, G-single,
//! G-single-realtime) and lost updates. The final read is one more transaction in the
//! history, and every acknowledged append must be in it.

use std::collections::BTreeMap;

use bytes::Bytes;
use journaldb::Client;
use parking_lot::Mutex;
use rand::Rng;

use super::{Verdict, Workload, read_keys};
use crate::elle::{self, AnomalyKind, Kind, Mop, Op};
use crate::recorder::{ClientCtx, Outcome, sim_now};

/// Lists.
pub const KEYS: u64 = 10;

fn key(k: u64) -> Bytes {
    Bytes::from(format!("la/{k}"))
}

fn parse(v: Option<Bytes>) -> Result<Vec<u64>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let s = std::str::from_utf8(&v).map_err(|_| format!("list {v:?} is not UTF-8"))?;
    s.split(',')
        .filter(|e| !e.is_empty())
        .map(|e| e.parse().map_err(|_| format!("list {s:?} holds {e:?}")))
        .collect()
}

fn render(list: &[u64]) -> Bytes {
    let s: Vec<String> = list.iter().map(u64::to_string).collect();
    Bytes::from(s.join(","))
}

/// The list-append workload.
#[derive(Debug, Default)]
pub struct ListAppend {
    history: Mutex<Vec<Op>>,
    /// Next value to append, per key (values are unique per key).
    next: Mutex<BTreeMap<u64, u64>>,
    violations: Mutex<Vec<String>>,
}

impl ListAppend {
    fn push(&self, kind: Kind, process: u64, value: Vec<Mop>) {
        let mut h = self.history.lock();
        let index = h.len() as u64;
        h.push(Op {
            index,
            kind,
            process,
            time: sim_now().as_nanos() as u64,
            value,
        });
    }
}

impl Workload for ListAppend {
    async fn setup(&self, _client: &Client) -> journaldb::Result<()> {
        Ok(()) // a missing list is empty
    }

    async fn step(&self, client: &Client, ctx: &mut ClientCtx) {
        let n = ctx.rng.random_range(1..=4);
        let mut plan = Vec::new();
        for _ in 0..n {
            let k = ctx.rng.random_range(0..KEYS);
            if ctx.rng.random_bool(0.5) {
                let mut next = self.next.lock();
                let v = next.entry(k).or_insert(1);
                plan.push(Mop::Append(k, *v));
                *v += 1;
            } else {
                plan.push(Mop::Read(k, None));
            }
        }
        let process = ctx.process;
        self.push(Kind::Invoke, process, plan.clone());
        let (outcome, done) = if ctx.rng.random_bool(0.5) {
            self.run_transact(client, ctx, &plan).await
        } else {
            self.run_interactive(client, ctx, &plan).await
        };
        let kind = match outcome {
            Outcome::Ok(_) => Kind::Ok,
            Outcome::Fail(_) => Kind::Fail,
            Outcome::Info(_) => Kind::Info,
        };
        // Completions carry what was read; a failed or unknown one, the invocation's plan.
        let value = if kind == Kind::Ok { done } else { plan };
        ctx.event(format_args!("txn {} {outcome:?}", render_mops(&value)));
        self.push(kind, process, value);
    }

    fn keys(&self) -> Vec<Bytes> {
        (0..KEYS).map(key).collect()
    }

    async fn check(
        &self,
        client: &Client,
        ctx: &mut ClientCtx,
        realtime_may_break: bool,
    ) -> journaldb::Result<Verdict> {
        let finals = read_keys(&client.begin(), (0..KEYS).map(key)).await?;
        let mut verdict = Verdict::failing(self.violations.lock().clone());
        let mut reads = Vec::new();
        for (k, v) in (0..KEYS).zip(finals) {
            match parse(v) {
                Ok(list) => reads.push(Mop::Read(k, Some(list))),
                Err(e) => verdict.failures.push(e),
            }
        }
        let process = ctx.process;
        self.push(
            Kind::Invoke,
            process,
            (0..KEYS).map(|k| Mop::Read(k, None)).collect(),
        );
        self.push(Kind::Ok, process, reads.clone());

        let history = self.history.lock().clone();
        // Every acknowledged append is in the final lists.
        let finals: BTreeMap<u64, Vec<u64>> = reads
            .into_iter()
            .filter_map(|m| match m {
                Mop::Read(k, Some(l)) => Some((k, l)),
                _ => None,
            })
            .collect();
        for op in history.iter().filter(|o| o.kind == Kind::Ok) {
            for m in &op.value {
                if let Mop::Append(k, v) = m
                    && !finals.get(k).is_some_and(|l| l.contains(v))
                {
                    verdict.failures.push(format!(
                        "durability: acknowledged append of {v} to list {k} (op {}) is not \
                         in the final state",
                        op.index
                    ));
                }
            }
        }
        let report = elle::check(&history);
        for a in &report.anomalies {
            let what = format!("{:?} {:?}: {}", a.kind, a.txns, a.explanation);
            if a.kind == AnomalyKind::GSingleRealtime && realtime_may_break {
                verdict.expected.push(what);
            } else {
                verdict.failures.push(what);
            }
        }
        ctx.event(format_args!(
            "elle: {} committed transactions, {} anomalies",
            report.committed,
            report.anomalies.len()
        ));
        Ok(verdict)
    }

    fn elle_history(&self) -> Option<String> {
        let h = self.history.lock();
        let mut out = String::new();
        for op in h.iter() {
            out.push_str(&op.to_json_line());
            out.push('\n');
        }
        Some(out)
    }
}

impl ListAppend {
    /// One transaction, run step by step: begin, reads and appends, commit.
    async fn run_interactive(
        &self,
        client: &Client,
        ctx: &mut ClientCtx,
        plan: &[Mop],
    ) -> (Outcome, Vec<Mop>) {
        let mut tx = client.begin();
        let mut done = Vec::new();
        let mut failed = None;
        for mop in plan {
            let (k, append) = match *mop {
                Mop::Read(k, _) => (k, None),
                Mop::Append(k, v) => (k, Some(v)),
            };
            let list = match tx.get(key(k)).await {
                Ok(current) => match parse(current) {
                    Ok(list) => list,
                    Err(e) => {
                        self.violations.lock().push(e);
                        failed = Some(Outcome::Fail("Corruption"));
                        break;
                    }
                },
                Err(e) => {
                    failed = Some(Outcome::Fail(e.kind_name()));
                    break;
                }
            };
            match append {
                None => done.push(Mop::Read(k, Some(list))),
                Some(v) => {
                    let mut list = list;
                    list.push(v);
                    if let Err(e) = tx.put(key(k), render(&list)) {
                        failed = Some(Outcome::Fail(e.kind_name()));
                        break;
                    }
                    done.push(Mop::Append(k, v));
                }
            }
        }
        let writes = plan.iter().any(|m| matches!(m, Mop::Append(..)));
        match failed {
            Some(outcome) => {
                ctx.record(outcome, writes);
                (outcome, done)
            }
            None => {
                let marker = if writes {
                    match ctx.mark(&mut tx) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            self.violations.lock().push(format!("a marker write: {e}"));
                            None
                        }
                    }
                } else {
                    None
                };
                (ctx.commit(tx, marker).await, done)
            }
        }
    }

    /// One transaction through `transact`, whose retries re-run it and whose outcome
    /// questions follow `CommitUnknown`: a run applied twice shows as a duplicate element.
    async fn run_transact(
        &self,
        client: &Client,
        ctx: &mut ClientCtx,
        plan: &[Mop],
    ) -> (Outcome, Vec<Mop>) {
        let writes = plan.iter().any(|m| matches!(m, Mop::Append(..)));
        let marker = writes.then(|| ctx.next_marker());
        let body = async |tx: &mut journaldb::Transaction| {
            let mut done = Vec::new();
            for mop in plan {
                let (k, append) = match *mop {
                    Mop::Read(k, _) => (k, None),
                    Mop::Append(k, v) => (k, Some(v)),
                };
                let list = parse(tx.get(key(k)).await?).map_err(journaldb::Error::Corruption)?;
                match append {
                    None => done.push(Mop::Read(k, Some(list))),
                    Some(v) => {
                        let mut list = list;
                        list.push(v);
                        tx.put(key(k), render(&list))?;
                        done.push(Mop::Append(k, v));
                    }
                }
            }
            if let Some(marker) = &marker {
                tx.put(marker.clone(), Bytes::from_static(b"1"))?;
            }
            Ok(done)
        };
        let (outcome, done) = ctx.transact(client, marker.clone(), body).await;
        if outcome == Outcome::Fail("Corruption") {
            self.violations
                .lock()
                .push("a list did not parse (inside transact)".into());
        }
        (outcome, done.unwrap_or_default())
    }
}

fn render_mops(mops: &[Mop]) -> String {
    let parts: Vec<String> = mops
        .iter()
        .map(|m| match m {
            Mop::Append(k, v) => format!("a{k}:{v}"),
            Mop::Read(k, None) => format!("r{k}"),
            Mop::Read(k, Some(l)) => format!("r{k}={}", render(l).escape_ascii()),
        })
        .collect();
    parts.join(" ")
}
