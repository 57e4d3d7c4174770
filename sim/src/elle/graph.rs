//! The graph algorithms of the Elle checker: real-time edges (transitively reduced),
//! strongly connected components, and reachability over the condensation.

use std::collections::{BTreeMap, BTreeSet};

use super::Txn;

/// Real-time edges `a → b` (a completed before b was invoked) among `live`, transitively
/// reduced as Elle does: at each invocation, an edge from every transaction on the
/// completion frontier; a completion replaces on the frontier every transaction it has an
/// edge from. Reachability equals the full real-time order with O(n × concurrency) edges
/// instead of O(n²).
pub(super) fn realtime_edges(txns: &[Txn], live: &[usize]) -> Vec<(usize, usize)> {
    // (time, 0 = invoke | 1 = complete, txn): at equal times invocations come first, as
    // real-time order needs a strictly earlier completion.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * live.len());
    for &t in live {
        events.push((txns[t].invoked, 0, t));
        if txns[t].completed != u64::MAX {
            events.push((txns[t].completed, 1, t));
        }
    }
    events.sort_unstable();
    let mut frontier: BTreeSet<usize> = BTreeSet::new();
    let mut preds: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut edges = Vec::new();
    for (_, what, t) in events {
        if what == 0 {
            let before: Vec<usize> = frontier.iter().copied().collect();
            edges.extend(before.iter().map(|a| (*a, t)));
            preds.insert(t, before);
        } else {
            for a in preds.remove(&t).unwrap_or_default() {
                frontier.remove(&a);
            }
            frontier.insert(t);
        }
    }
    edges
}

/// Which nodes reach which: the transitive closure of a graph, over its condensation
/// (strongly connected components), as one bitset per component.
pub(super) struct Closure {
    component: Vec<usize>,
    /// `reach[c]`: the components component `c` reaches (itself included).
    reach: Vec<Vec<u64>>,
}

impl Closure {
    pub(super) fn new(n: usize, edges: &[(usize, usize)]) -> Self {
        let component = components(n, edges.iter().copied());
        let count = component.iter().copied().max().map_or(0, |c| c + 1);
        let words = count.div_ceil(64);
        let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); count];
        for &(a, b) in edges {
            if component[a] != component[b] {
                succ[component[a]].insert(component[b]);
            }
        }
        // Kosaraju numbers components in topological order of the condensation: an edge
        // goes from a lower to a higher number, so fill from the last one back.
        let mut reach = vec![vec![0u64; words]; count];
        for c in (0..count).rev() {
            let mut bits = vec![0u64; words];
            bits[c / 64] |= 1 << (c % 64);
            for &d in &succ[c] {
                debug_assert!(d > c, "condensation not in topological order");
                for (w, r) in bits.iter_mut().zip(&reach[d]) {
                    *w |= r;
                }
            }
            reach[c] = bits;
        }
        Closure { component, reach }
    }

    pub(super) fn reaches(&self, from: usize, to: usize) -> bool {
        let (a, b) = (self.component[from], self.component[to]);
        self.reach[a][b / 64] & (1 << (b % 64)) != 0
    }
}

/// The strongly connected component of each of `n` nodes (Kosaraju, iterative), numbered
/// in topological order of the condensation.
pub(super) fn components(n: usize, edges: impl Iterator<Item = (usize, usize)>) -> Vec<usize> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut inc: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (a, b) in edges {
        out[a].push(b);
        inc[b].push(a);
    }
    // First pass: finishing order.
    let mut order = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((x, i)) = stack.pop() {
            if let Some(&y) = out[x].get(i) {
                stack.push((x, i + 1));
                if !visited[y] {
                    visited[y] = true;
                    stack.push((y, 0));
                }
            } else {
                order.push(x);
            }
        }
    }
    // Second pass, on the reversed graph, in reverse finishing order.
    let mut component = vec![usize::MAX; n];
    let mut next = 0;
    for &root in order.iter().rev() {
        if component[root] != usize::MAX {
            continue;
        }
        let c = next;
        next += 1;
        component[root] = c;
        let mut stack = vec![root];
        while let Some(x) = stack.pop() {
            for &y in &inc[x] {
                if component[y] == usize::MAX {
                    component[y] = c;
                    stack.push(y);
                }
            }
        }
    }
    component
}
