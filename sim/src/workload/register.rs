//! Register: counters that transactions read, or read and increment. Snapshot isolation
//! makes every increment count once, so each counter's final value lies between its
//! acknowledged increments and those plus the ones whose outcome is unknown. Each read is
//! checked against real time: it must see every increment acknowledged before the read
//! began (else a stale read, which breaks strong SI) and no more increments than were
//! invoked before it ended.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use journaldb::Client;
use parking_lot::Mutex;
use rand::Rng;

use super::{Verdict, Workload, read_keys};
use crate::recorder::{ClientCtx, Outcome, sim_now};

/// Counters.
pub const REGISTERS: u64 = 8;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("reg/{i}"))
}

fn value(v: Option<Bytes>) -> Result<u64, String> {
    match v {
        None => Ok(0),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("a register holds {v:?}, not a number")),
    }
}

#[derive(Debug, Clone, Copy)]
struct Increment {
    invoked: Duration,
    completed: Duration,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
struct Read {
    invoked: Duration,
    completed: Duration,
    value: u64,
    process: u64,
}

/// The register workload.
#[derive(Debug, Default)]
pub struct Register {
    increments: Mutex<BTreeMap<u64, Vec<Increment>>>,
    reads: Mutex<BTreeMap<u64, Vec<Read>>>,
    violations: Mutex<Vec<String>>,
}

impl Workload for Register {
    async fn setup(&self, _client: &Client) -> journaldb::Result<()> {
        Ok(()) // a missing register reads as 0
    }

    async fn step(&self, client: &Client, ctx: &mut ClientCtx) {
        let r = ctx.rng.random_range(0..REGISTERS);
        let increment = ctx.rng.random_bool(0.5);
        let invoked = sim_now();
        let mut tx = client.begin();
        let current = match tx.get(key(r)).await {
            Ok(v) => match value(v) {
                Ok(v) => v,
                Err(e) => {
                    self.violations.lock().push(e);
                    return;
                }
            },
            Err(e) => {
                ctx.record(Outcome::Fail(e.kind_name()), increment);
                return;
            }
        };
        if !increment {
            let outcome = ctx.commit(tx, None).await;
            if let Outcome::Ok(_) = outcome {
                self.reads.lock().entry(r).or_default().push(Read {
                    invoked,
                    completed: sim_now(),
                    value: current,
                    process: ctx.process,
                });
            }
            ctx.event(format_args!("read reg/{r} = {current}"));
            return;
        }
        let marker = match tx
            .put(key(r), Bytes::from((current + 1).to_string()))
            .and_then(|()| ctx.mark(&mut tx))
        {
            Ok(m) => m,
            Err(e) => {
                self.violations
                    .lock()
                    .push(format!("an increment's writes: {e}"));
                return;
            }
        };
        let outcome = ctx.commit(tx, Some(marker)).await;
        self.increments
            .lock()
            .entry(r)
            .or_default()
            .push(Increment {
                invoked,
                completed: sim_now(),
                outcome,
            });
        ctx.event(format_args!(
            "increment reg/{r} {current}->{} {outcome:?}",
            current + 1
        ));
    }

    fn keys(&self) -> Vec<Bytes> {
        (0..REGISTERS).map(key).collect()
    }

    async fn check(
        &self,
        client: &Client,
        ctx: &mut ClientCtx,
        realtime_may_break: bool,
    ) -> journaldb::Result<Verdict> {
        let finals = read_keys(&client.begin(), (0..REGISTERS).map(key)).await?;
        let mut verdict = Verdict::failing(self.violations.lock().clone());
        let increments = self.increments.lock().clone();
        let reads = self.reads.lock().clone();
        for (r, v) in (0..REGISTERS).zip(finals) {
            let v = match value(v) {
                Ok(v) => v,
                Err(e) => {
                    verdict.failures.push(e);
                    continue;
                }
            };
            let incs = increments.get(&r).map(Vec::as_slice).unwrap_or_default();
            let ok = incs
                .iter()
                .filter(|i| matches!(i.outcome, Outcome::Ok(_)))
                .count() as u64;
            let info = incs
                .iter()
                .filter(|i| matches!(i.outcome, Outcome::Info(_)))
                .count() as u64;
            if v < ok {
                verdict.failures.push(format!(
                    "lost update: reg/{r} is {v} after {ok} acknowledged increments"
                ));
            } else if v > ok + info {
                verdict.failures.push(format!(
                    "reg/{r} is {v}: more than its {ok} acknowledged and {info} unknown increments"
                ));
            }
            for read in reads.get(&r).map(Vec::as_slice).unwrap_or_default() {
                let before = incs
                    .iter()
                    .filter(|i| matches!(i.outcome, Outcome::Ok(_)) && i.completed < read.invoked)
                    .count() as u64;
                let possible = incs
                    .iter()
                    .filter(|i| {
                        !matches!(i.outcome, Outcome::Fail(_)) && i.invoked < read.completed
                    })
                    .count() as u64;
                if read.value < before {
                    let what = format!(
                        "stale read: p{} read reg/{r} = {} at {:?} after {before} increments \
                         had been acknowledged",
                        read.process, read.value, read.invoked
                    );
                    if realtime_may_break {
                        verdict.expected.push(what);
                    } else {
                        verdict.failures.push(what);
                    }
                }
                if read.value > possible {
                    verdict.failures.push(format!(
                        "p{} read reg/{r} = {} but only {possible} increments had begun",
                        read.process, read.value
                    ));
                }
            }
        }
        ctx.event(format_args!(
            "register check: {} failures",
            verdict.failures.len()
        ));
        Ok(verdict)
    }
}
