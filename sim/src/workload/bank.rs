//! Bank: accounts holding money, transfers between random pairs, and read-only audits.
//! Checks: every audit sees the initial total and none aborts (read-only transactions
//! never abort; timeouts under faults are counted, not failures); the final total is the
//! initial total.

use bytes::Bytes;
use journaldb::Client;
use parking_lot::Mutex;
use rand::Rng;

use super::{Verdict, Workload, read_keys};
use crate::recorder::{ClientCtx, Outcome, classify};

/// Accounts in the bank.
pub const ACCOUNTS: u64 = 12;
/// Each account's opening balance.
pub const OPENING: i64 = 100;

fn account(i: u64) -> Bytes {
    Bytes::from(format!("bank/{i:02}"))
}

fn balance(value: Option<Bytes>) -> Result<i64, String> {
    let value = value.ok_or(MISSING)?;
    std::str::from_utf8(&value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("an account holds {value:?}, not a number"))
}

/// The bank workload.
#[derive(Debug, Default)]
pub struct Bank {
    /// Violations seen while running (an audit with a wrong total or that aborted).
    violations: Mutex<Vec<String>>,
    /// Reads that found an account missing: a snapshot older than the setup's commit. Only
    /// a client whose clock left its bound takes one (its "now" is in the past: real-time
    /// order breaks, which that fault is allowed to cause); otherwise a failure. A setup
    /// that was acknowledged and then lost fails the final check regardless.
    missing: Mutex<Vec<String>>,
}

const MISSING: &str = "an account is missing";

async fn read_all(tx: &journaldb::Transaction) -> journaldb::Result<Vec<Option<Bytes>>> {
    read_keys(tx, (0..ACCOUNTS).map(account)).await
}

impl Bank {
    /// A transfer through `transact` (its retries and outcome questions). The marker is
    /// written in every attempt, with or without funds, so it stays a writing transaction.
    async fn transfer_with_transact(
        &self,
        client: &Client,
        ctx: &mut ClientCtx,
        from: u64,
        to: u64,
        amount: i64,
    ) {
        let marker = ctx.next_marker();
        // A missing account is `InvalidArgument` (not retried, told apart from a balance
        // that is not a number, `Corruption`).
        let read = |e: String| match e.as_str() {
            MISSING => journaldb::Error::InvalidArgument(e),
            _ => journaldb::Error::Corruption(e),
        };
        let body = async |tx: &mut journaldb::Transaction| {
            let a = balance(tx.get(account(from)).await?).map_err(read)?;
            let b = balance(tx.get(account(to)).await?).map_err(read)?;
            if a >= amount {
                tx.put(account(from), Bytes::from((a - amount).to_string()))?;
                tx.put(account(to), Bytes::from((b + amount).to_string()))?;
            }
            tx.put(marker.clone(), Bytes::from_static(b"1"))?;
            Ok(a >= amount)
        };
        let (outcome, moved) = ctx.transact(client, Some(marker.clone()), body).await;
        if outcome == Outcome::Fail("Corruption") {
            self.violations
                .lock()
                .push("a transfer read an account that is not a number".into());
        }
        if outcome == Outcome::Fail("InvalidArgument") {
            self.missing.lock().push(format!(
                "a transfer (transact) by {} p{}: {MISSING}",
                ctx.host, ctx.process
            ));
        }
        ctx.event(format_args!(
            "transfer {amount} {from}->{to} (transact, moved {moved:?}) {outcome:?}"
        ));
    }
}

impl Workload for Bank {
    async fn setup(&self, client: &Client) -> journaldb::Result<()> {
        let mut tx = client.begin();
        if tx.get(account(0)).await?.is_some() {
            return Ok(());
        }
        for i in 0..ACCOUNTS {
            tx.put(account(i), Bytes::from(OPENING.to_string()))?;
        }
        tx.commit().await.map(|_| ())
    }

    async fn step(&self, client: &Client, ctx: &mut ClientCtx) {
        if ctx.rng.random_bool(0.2) {
            let tx = client.begin();
            let read = read_all(&tx).await;
            let outcome = match read {
                Ok(values) => {
                    let total: Result<i64, String> = values.into_iter().map(balance).sum();
                    match total {
                        Ok(t) if t == OPENING * ACCOUNTS as i64 => {}
                        Ok(t) => self.violations.lock().push(format!(
                            "an audit by {} p{} saw a total of {t}",
                            ctx.host, ctx.process
                        )),
                        Err(e) if e == MISSING => self
                            .missing
                            .lock()
                            .push(format!("an audit by {} p{}: {e}", ctx.host, ctx.process)),
                        Err(e) => self.violations.lock().push(format!("an audit: {e}")),
                    }
                    classify(tx.commit().await)
                }
                Err(e) => {
                    if matches!(e, journaldb::Error::Conflict { .. }) {
                        self.violations
                            .lock()
                            .push(format!("a read-only audit aborted: {e}"));
                    }
                    Outcome::Fail(e.kind_name())
                }
            };
            ctx.event(format_args!("audit {outcome:?}"));
            ctx.record(outcome, false);
            return;
        }
        let from = ctx.rng.random_range(0..ACCOUNTS);
        let to = (from + ctx.rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount: i64 = ctx.rng.random_range(1..=20);
        if ctx.rng.random_bool(0.5) {
            self.transfer_with_transact(client, ctx, from, to, amount)
                .await;
            return;
        }
        let mut tx = client.begin();
        let balances = async {
            let a = tx.get(account(from)).await?;
            let b = tx.get(account(to)).await?;
            Ok::<_, journaldb::Error>((a, b))
        }
        .await;
        let (a, b) = match balances {
            Ok((a, b)) => match (balance(a), balance(b)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    let at = tx.start_ts().as_nanos();
                    ctx.event(format_args!("transfer {from}->{to} at {at} read: {e}"));
                    let list = match e == MISSING {
                        true => &self.missing,
                        false => &self.violations,
                    };
                    list.lock().push(format!(
                        "a transfer read: {e} (by {} p{} at {at})",
                        ctx.host, ctx.process
                    ));
                    return;
                }
            },
            Err(e) => {
                ctx.record(Outcome::Fail(e.kind_name()), true);
                return;
            }
        };
        if a < amount {
            return;
        }
        let writes = (|| {
            tx.put(account(from), Bytes::from((a - amount).to_string()))?;
            tx.put(account(to), Bytes::from((b + amount).to_string()))
        })();
        let marker = match writes.and_then(|()| ctx.mark(&mut tx)) {
            Ok(m) => m,
            Err(e) => {
                self.violations
                    .lock()
                    .push(format!("a transfer's writes: {e}"));
                return;
            }
        };
        let outcome = ctx.commit(tx, Some(marker)).await;
        ctx.event(format_args!("transfer {amount} {from}->{to} {outcome:?}"));
    }

    fn keys(&self) -> Vec<Bytes> {
        (0..ACCOUNTS).map(account).collect()
    }

    async fn check(
        &self,
        client: &Client,
        ctx: &mut ClientCtx,
        realtime_may_break: bool,
    ) -> journaldb::Result<Verdict> {
        let tx = client.begin();
        let values = read_all(&tx).await?;
        let mut verdict = Verdict::failing(self.violations.lock().clone());
        let missing = self.missing.lock().clone();
        match realtime_may_break {
            true => verdict.expected.extend(missing),
            false => verdict.failures.extend(missing),
        }
        let total: Result<i64, String> = values.into_iter().map(balance).sum();
        match total {
            Ok(t) if t == OPENING * ACCOUNTS as i64 => {}
            Ok(t) => verdict.failures.push(format!(
                "the final total is {t}, not {}",
                OPENING * ACCOUNTS as i64
            )),
            Err(e) => verdict.failures.push(format!("the final state: {e}")),
        }
        ctx.event(format_args!(
            "bank check: {} failures",
            verdict.failures.len()
        ));
        Ok(verdict)
    }
}
