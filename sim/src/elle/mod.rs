//! An in-house checker for list-append histories in Elle's format (ARCHITECTURE §7).
//!
//! A history is one JSON operation per line:
//! `{"index":i,"type":"invoke|ok|fail|info","process":p,"time":ns,"value":[["append",k,v],["r",k,[...]]]}`,
//! each `invoke` followed (not necessarily at once) by its process's completion. Appended
//! values are unique per key, so every read names the writers of everything it saw.
//!
//! The checker infers, per key, the version order — the longest list read; every other
//! read must be a prefix of it — and from it the dependency graph between committed
//! transactions (`ok`, and `info` ones whose effects were observed):
//! - **ww**: T1 appended to k just before T2 did;
//! - **wr**: T2 read k ending with T1's append;
//! - **rw**: T1 read k, and T2 appended an element T1's read does not hold (it came
//!   after: reads are prefixes of the version order);
//! - **rt** (real time): T1 completed before T2 was invoked.
//!
//! and reports, with the transactions involved: **G1a** (a read saw an element of a failed
//! transaction), **G1b** (a read ended at an append that was not its writer's last to that
//! key), **incompatible order** (two reads of a key that are not prefixes of one another),
//! **duplicate** (an element seen twice in one read), **lost update** (two committed
//! transactions read the same version of a key and both appended to it), and the cycles
//! **G0** (ww only), **G1c** (ww and wr), **G-single** (exactly one rw edge) and
//! **G-single-realtime** (the same, closing only through real-time edges). Snapshot
//! isolation forbids all of these; strong SI forbids G-single-realtime too. Write skew
//! (cycles with two or more rw edges) is allowed and not reported.
//!
//! An operation whose outcome is unknown (`info`) counts as committed only if something it
//! appended was read; a read it made is not checked (its client never saw it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// A key or an appended value.
pub type Value = u64;

/// One micro-operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mop {
    /// Append `value` to the list at `key`.
    Append(Value, Value),
    /// Read the list at `key`: `None` in an invocation (not yet known).
    Read(Value, Option<Vec<Value>>),
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The client sent it.
    Invoke,
    /// It committed.
    Ok,
    /// It certainly did not commit.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Position in the history.
    pub index: u64,
    /// What happened.
    pub kind: Kind,
    /// The client process.
    pub process: u64,
    /// When, in nanoseconds.
    pub time: u64,
    /// The transaction's micro-operations.
    pub value: Vec<Mop>,
}

impl Op {
    /// The operation as one line of an Elle list-append history (no newline).
    pub fn to_json_line(&self) -> String {
        let kind = match self.kind {
            Kind::Invoke => "invoke",
            Kind::Ok => "ok",
            Kind::Fail => "fail",
            Kind::Info => "info",
        };
        let value: Vec<serde_json::Value> = self
            .value
            .iter()
            .map(|m| match m {
                Mop::Append(k, v) => serde_json::json!(["append", k, v]),
                Mop::Read(k, list) => serde_json::json!(["r", k, list]),
            })
            .collect();
        serde_json::json!({
            "index": self.index,
            "type": kind,
            "process": self.process,
            "time": self.time,
            "value": value,
        })
        .to_string()
    }
}

/// A history that cannot be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// What the checker can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// A cycle of write-write dependencies.
    G0,
    /// A read of a failed transaction's write.
    G1a,
    /// A read of a transaction's intermediate write.
    G1b,
    /// A cycle of write-write and write-read dependencies.
    G1c,
    /// A cycle with exactly one read-write anti-dependency.
    GSingle,
    /// A G-single cycle that needs real-time order to close.
    GSingleRealtime,
    /// Two committed transactions read the same version of a key and both appended to it.
    LostUpdate,
    /// Two reads of a key that are not prefixes of one another.
    IncompatibleOrder,
    /// A read with the same element twice.
    Duplicate,
}

/// One anomaly, with the transactions (indices of their completions) involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Which kind.
    pub kind: AnomalyKind,
    /// The transactions, as the history indices of their completions.
    pub txns: Vec<u64>,
    /// A sentence saying what happened.
    pub explanation: String,
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Every anomaly found (empty: the history is snapshot-isolated).
    pub anomalies: Vec<Anomaly>,
    /// Committed transactions checked.
    pub committed: usize,
}

impl Report {
    /// Whether no anomaly was found.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The kinds found, each once.
    pub fn kinds(&self) -> BTreeSet<AnomalyKind> {
        self.anomalies.iter().map(|a| a.kind).collect()
    }
}

fn parse_line(line: &str) -> Result<Op, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let field = |name: &str| v.get(name).ok_or_else(|| format!("no {name:?}"));
    let uint = |name: &str| {
        field(name)?
            .as_u64()
            .ok_or_else(|| format!("{name:?} is not an unsigned integer"))
    };
    let kind = match field("type")?.as_str() {
        Some("invoke") => Kind::Invoke,
        Some("ok") => Kind::Ok,
        Some("fail") => Kind::Fail,
        Some("info") => Kind::Info,
        other => return Err(format!("unknown type {other:?}")),
    };
    let mops = field("value")?
        .as_array()
        .ok_or("\"value\" is not a list")?
        .iter()
        .map(|m| {
            let m = m.as_array().ok_or("a micro-operation is not a list")?;
            let f = m.first().and_then(|f| f.as_str());
            let key = m
                .get(1)
                .and_then(serde_json::Value::as_u64)
                .ok_or("a micro-operation's key is not an unsigned integer")?;
            match (f, m.get(2)) {
                (Some("append"), Some(v)) => Ok(Mop::Append(
                    key,
                    v.as_u64()
                        .ok_or("an appended value is not an unsigned integer")?,
                )),
                (Some("r"), Some(serde_json::Value::Null) | None) => Ok(Mop::Read(key, None)),
                (Some("r"), Some(list)) => {
                    let list = list
                        .as_array()
                        .ok_or("a read's value is not a list")?
                        .iter()
                        .map(|e| {
                            e.as_u64()
                                .ok_or("a read element is not an unsigned integer")
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Mop::Read(key, Some(list)))
                }
                _ => Err("a micro-operation is not [\"append\",k,v] or [\"r\",k,list]"),
            }
        })
        .collect::<Result<Vec<_>, &str>>()?;
    Ok(Op {
        index: uint("index")?,
        kind,
        process: uint("process")?,
        time: uint("time")?,
        value: mops,
    })
}

/// Parses a history, one JSON operation per line (blank lines skipped).
pub fn parse(text: &str) -> Result<Vec<Op>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|reason| ParseError {
                line: i + 1,
                reason,
            })
        })
        .collect()
}

/// A completed transaction.
#[derive(Debug, Clone)]
struct Txn {
    /// Index of its completion.
    id: u64,
    kind: Kind,
    invoked: u64,
    completed: u64,
    mops: Vec<Mop>,
}

/// Dependency edge kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Edge {
    Ww,
    Wr,
    Rw,
    Rt,
}

/// Who appended each (key, value), and whether it was the writer's last append to that key.
type Writers = BTreeMap<(Value, Value), (usize, bool)>;
/// A read by a committed transaction: (transaction, key, the list it read).
type Read<'a> = (usize, Value, &'a Vec<Value>);
/// Dependency edges between transactions, with their kinds.
type Edges = BTreeMap<(usize, usize), BTreeSet<Edge>>;

/// Checks a history, in phases: transactions from the operations, who wrote what, the
/// version order of each key (with the anomalies reads alone show), aborted and
/// intermediate reads, the dependency graph (with lost updates), and its cycles.
pub fn check(ops: &[Op]) -> Report {
    let txns = transactions(ops);
    let writer = writers(&txns);
    let observed = observed(&txns, &writer);
    let committed = |t: usize| match txns[t].kind {
        Kind::Ok => true,
        Kind::Info => observed.contains(&t),
        Kind::Fail | Kind::Invoke => false,
    };
    let reads = reads(&txns);
    let mut anomalies = Vec::new();
    let order = version_order(&txns, &reads, &mut anomalies);
    aborted_and_intermediate_reads(&txns, &writer, &reads, &mut anomalies);
    let mut edges = dependencies(&txns, &writer, &order, &reads, &mut anomalies);
    let n = txns.len();
    let live: Vec<usize> = (0..n).filter(|t| committed(*t)).collect();
    for (a, b) in realtime_edges(&txns, &live) {
        if a != b {
            edges.entry((a, b)).or_default().insert(Edge::Rt);
        }
    }
    edges.retain(|(a, b), _| committed(*a) && committed(*b));
    // A cycle lies inside one strongly connected component: search only edges within one.
    let component = components(n, edges.keys().copied());
    edges.retain(|(a, b), _| component[*a] == component[*b]);
    anomalies.extend(cycles(&txns, &edges));
    Report {
        anomalies,
        committed: live.len(),
    }
}

/// Invocations paired with their completions, per process, in order; a process still
/// open at the end is indeterminate (`info`).
fn transactions(ops: &[Op]) -> Vec<Txn> {
    // Pair invocations with completions, per process, in order.
    let mut open: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut txns = Vec::new();
    for op in ops {
        match op.kind {
            Kind::Invoke => {
                open.insert(op.process, op);
            }
            kind => {
                let invoked = open.remove(&op.process).map_or(op.time, |i| i.time);
                // An `info` completion is the moment the client gave up, not the moment
                // the transaction took effect: it may commit any time later (a request
                // held in the network past every deadline), so it precedes nothing in
                // real time — Elle's rule too.
                let completed = if kind == Kind::Info {
                    u64::MAX
                } else {
                    op.time
                };
                txns.push(Txn {
                    id: op.index,
                    kind,
                    invoked,
                    completed,
                    mops: op.value.clone(),
                });
            }
        }
    }
    // Processes still open at the end are indeterminate.
    for (_, op) in open {
        txns.push(Txn {
            id: op.index,
            kind: Kind::Info,
            invoked: op.time,
            completed: u64::MAX,
            mops: op.value.clone(),
        });
    }

    txns
}

fn writers(txns: &[Txn]) -> Writers {
    // Who appended each (key, value), and whether it was the writer's last to that key.
    let mut writer = Writers::new();
    for (t, txn) in txns.iter().enumerate() {
        let mut last: BTreeMap<Value, Value> = BTreeMap::new();
        for m in &txn.mops {
            if let Mop::Append(k, v) = m {
                last.insert(*k, *v);
            }
        }
        for m in &txn.mops {
            if let Mop::Append(k, v) = m {
                writer.insert((*k, *v), (t, last.get(k) == Some(v)));
            }
        }
    }
    writer
}

/// Transactions whose appends some committed read observed: an `info` one among them
/// committed.
fn observed(txns: &[Txn], writer: &Writers) -> BTreeSet<usize> {
    txns.iter()
        .filter(|t| t.kind == Kind::Ok)
        .flat_map(|t| t.mops.iter())
        .filter_map(|m| match m {
            Mop::Read(k, Some(list)) => Some(list.iter().map(move |v| (*k, *v))),
            _ => None,
        })
        .flatten()
        .filter_map(|kv| writer.get(&kv).map(|(t, _)| *t))
        .collect()
}

/// Reads by committed (`ok`) transactions.
fn reads(txns: &[Txn]) -> Vec<Read<'_>> {
    txns.iter()
        .enumerate()
        .filter(|(_, t)| t.kind == Kind::Ok)
        .flat_map(|(i, t)| {
            t.mops.iter().filter_map(move |m| match m {
                Mop::Read(k, Some(list)) => Some((i, *k, list)),
                _ => None,
            })
        })
        .collect()
}

/// The version order of each key: its longest read, every other read a prefix of it
/// (`IncompatibleOrder` if not; `Duplicate` for a value read twice).
fn version_order(
    txns: &[Txn],
    reads: &[Read<'_>],
    anomalies: &mut Vec<Anomaly>,
) -> BTreeMap<Value, Vec<Value>> {
    let mut order: BTreeMap<Value, Vec<Value>> = BTreeMap::new();
    for (t, k, list) in reads {
        let mut seen = BTreeSet::new();
        if let Some(dup) = list.iter().find(|v| !seen.insert(**v)) {
            anomalies.push(Anomaly {
                kind: AnomalyKind::Duplicate,
                txns: vec![txns[*t].id],
                explanation: format!("a read of key {k} holds {dup} twice: {list:?}"),
            });
        }
        let longest = order.entry(*k).or_default();
        let (short, long) = if list.len() <= longest.len() {
            (&list[..], &longest[..])
        } else {
            (&longest[..], &list[..])
        };
        if long[..short.len()] != *short {
            anomalies.push(Anomaly {
                kind: AnomalyKind::IncompatibleOrder,
                txns: vec![txns[*t].id],
                explanation: format!(
                    "reads of key {k} disagree: {short:?} is not a prefix of {long:?}"
                ),
            });
        } else if list.len() > longest.len() {
            *longest = (*list).clone();
        }
    }

    order
}

/// G1a (a read of a failed transaction's append) and G1b (a read ending at another
/// transaction's intermediate append).
fn aborted_and_intermediate_reads(
    txns: &[Txn],
    writer: &Writers,
    reads: &[Read<'_>],
    anomalies: &mut Vec<Anomaly>,
) {
    for (t, k, list) in reads {
        for v in list.iter() {
            if let Some((w, _)) = writer.get(&(*k, *v))
                && txns[*w].kind == Kind::Fail
            {
                anomalies.push(Anomaly {
                    kind: AnomalyKind::G1a,
                    txns: vec![txns[*w].id, txns[*t].id],
                    explanation: format!(
                        "transaction {} read {v} of key {k}, appended by failed transaction {}",
                        txns[*t].id, txns[*w].id
                    ),
                });
            }
        }
        if let Some(v) = list.last()
            && let Some((w, false)) = writer.get(&(*k, *v))
            && w != t
        {
            anomalies.push(Anomaly {
                kind: AnomalyKind::G1b,
                txns: vec![txns[*w].id, txns[*t].id],
                explanation: format!(
                    "transaction {} read key {k} ending at {v}, an intermediate append of {}",
                    txns[*t].id, txns[*w].id
                ),
            });
        }
    }
}

/// The ww, wr and rw edges between transactions, and the lost updates (two transactions
/// that read the same version of a key and both appended to it).
fn dependencies(
    txns: &[Txn],
    writer: &Writers,
    order: &BTreeMap<Value, Vec<Value>>,
    reads: &[Read<'_>],
    anomalies: &mut Vec<Anomaly>,
) -> Edges {
    let mut edges = Edges::new();
    let mut add = |a: usize, b: usize, e: Edge| {
        if a != b {
            edges.entry((a, b)).or_default().insert(e);
        }
    };
    let writer_of = |k: Value, v: Value| writer.get(&(k, v)).map(|(t, _)| *t);
    for (k, versions) in order {
        for pair in versions.windows(2) {
            if let (Some(a), Some(b)) = (writer_of(*k, pair[0]), writer_of(*k, pair[1])) {
                add(a, b, Edge::Ww);
            }
        }
    }
    // Every append, per key: (value, writer).
    let mut appends_to: BTreeMap<Value, Vec<(Value, usize)>> = BTreeMap::new();
    for ((k, v), (w, _)) in writer {
        appends_to.entry(*k).or_default().push((*v, *w));
    }
    // Per (key, version read): who read it; for lost updates.
    let mut readers_of_version: BTreeMap<(Value, usize), Vec<usize>> = BTreeMap::new();
    for (t, k, list) in reads {
        if let Some(w) = list.last().and_then(|v| writer_of(*k, *v)) {
            add(w, *t, Edge::Wr);
        }
        // Every append to k the read does not hold came after the version it read (reads
        // are prefixes of the version order): its writer overwrote what was read.
        let seen: BTreeSet<Value> = list.iter().copied().collect();
        for (v, w) in appends_to.get(k).into_iter().flatten() {
            if !seen.contains(v) {
                add(*t, *w, Edge::Rw);
            }
        }
        // Only a read of the snapshot (before the transaction's own appends to k) can
        // have been overwritten by them; a read after them sees its own writes.
        let own = list.iter().any(|v| writer_of(*k, *v) == Some(*t));
        if !own {
            readers_of_version
                .entry((*k, list.len()))
                .or_default()
                .push(*t);
        }
    }
    for ((k, len), readers) in &readers_of_version {
        let appenders: Vec<usize> = readers
            .iter()
            .copied()
            .filter(|t| {
                txns[*t]
                    .mops
                    .iter()
                    .any(|m| matches!(m, Mop::Append(key, _) if key == k))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if appenders.len() > 1 {
            anomalies.push(Anomaly {
                kind: AnomalyKind::LostUpdate,
                txns: appenders.iter().map(|t| txns[*t].id).collect(),
                explanation: format!(
                    "transactions {:?} all read key {k} at its version of length {len} and all appended to it",
                    appenders.iter().map(|t| txns[*t].id).collect::<Vec<_>>()
                ),
            });
        }
    }
    edges
}

/// The dependency cycles of `edges`, by class: G0 (ww), G1c (ww, wr), G-single (one rw,
/// then ww/wr), and G-single-realtime (one rw, then ww/wr/rt).
fn cycles(txns: &[Txn], edges: &Edges) -> Vec<Anomaly> {
    let n = txns.len();
    let mut anomalies = Vec::new();
    // Whether an edge a → b closes a cycle of
    // a class is a reachability question (b reaches a over the class's other edges),
    // answered for every edge at once from a closure of the condensed graph; paths are
    // searched only for the first few cycles of each class reported.
    let reach = |from: usize, to: usize, allowed: &[Edge]| -> Option<Vec<usize>> {
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(x) = queue.pop_front() {
            if x == to {
                let mut path = vec![to];
                let mut y = to;
                while let Some(&p) = prev.get(&y) {
                    path.push(p);
                    y = p;
                }
                path.reverse();
                return Some(path);
            }
            for ((a, b), kinds) in edges.range((x, 0)..(x + 1, 0)) {
                debug_assert_eq!(*a, x);
                if kinds.iter().any(|k| allowed.contains(k)) && seen.insert(*b) {
                    prev.insert(*b, x);
                    queue.push_back(*b);
                }
            }
        }
        None
    };
    let ids = |path: &[usize]| path.iter().map(|t| txns[*t].id).collect::<Vec<_>>();
    let closure = |allowed: &[Edge]| {
        let sub: Vec<(usize, usize)> = edges
            .iter()
            .filter(|(_, kinds)| kinds.iter().any(|k| allowed.contains(k)))
            .map(|(ab, _)| *ab)
            .collect();
        Closure::new(n, &sub)
    };
    let classes: [(AnomalyKind, Edge, &[Edge]); 4] = [
        (AnomalyKind::G0, Edge::Ww, &[Edge::Ww]),
        (AnomalyKind::G1c, Edge::Wr, &[Edge::Ww, Edge::Wr]),
        (AnomalyKind::GSingle, Edge::Rw, &[Edge::Ww, Edge::Wr]),
        (
            AnomalyKind::GSingleRealtime,
            Edge::Rw,
            &[Edge::Ww, Edge::Wr, Edge::Rt],
        ),
    ];
    let mut cycles: Vec<(AnomalyKind, Vec<u64>)> = Vec::new();
    // Transactions already in a reported cycle of a stronger class (G1c after G0, …).
    let mut explained: BTreeSet<(usize, usize)> = BTreeSet::new();
    for (kind, closing, others) in classes {
        let closure = closure(others);
        let mut found = 0;
        for ((a, b), kinds) in edges {
            let (a, b) = (*a, *b);
            // G1c may close over a ww or a wr edge; the others over their own kind.
            let closes =
                kinds.contains(&closing) || (kind == AnomalyKind::G1c && kinds.contains(&Edge::Ww));
            if !closes || explained.contains(&(a, b)) || !closure.reaches(b, a) {
                continue;
            }
            explained.insert((a, b));
            if found < MAX_CYCLES_PER_CLASS
                && let Some(path) = reach(b, a, others)
            {
                cycles.push((kind, ids(&path)));
                found += 1;
            }
        }
    }
    // One report per cycle, whatever edge it was found from.
    let mut reported: BTreeSet<(AnomalyKind, BTreeSet<u64>)> = BTreeSet::new();
    for (kind, path) in cycles {
        if reported.insert((kind, path.iter().copied().collect())) {
            anomalies.push(Anomaly {
                kind,
                txns: path.clone(),
                explanation: format!("a dependency cycle through transactions {path:?}"),
            });
        }
    }
    anomalies
}

/// Cycles of one class reported with their transactions (the rest are counted in the
/// search, not listed: one is enough to fail a history).
const MAX_CYCLES_PER_CLASS: usize = 10;

mod graph;
use graph::{Closure, components, realtime_edges};

#[cfg(test)]
mod tests;
