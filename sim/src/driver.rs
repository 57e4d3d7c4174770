//! The fault driver of a run: applies each fault window's start and end between simulation
//! steps (ARCHITECTURE §7), restarts nodes that stopped by themselves once their disk works
//! (as a process supervisor would), and heals everything at the end of the fault phase.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::SimClock;
use crate::cluster::{Knobs, SimCluster};
use crate::faults::{FaultKind, Target, Window};
use crate::recorder::Shared;

/// Applies fault windows and restarts nodes that stopped.
pub(crate) struct Driver<'a> {
    cluster: &'a SimCluster,
    client_clocks: Vec<(String, Arc<SimClock>)>,
    knobs: &'a Knobs,
    shared: &'a Shared,
    fired: BTreeMap<FaultKind, u64>,
    /// Nodes the schedule holds down (crashed), until the window ends.
    down: BTreeMap<String, u32>,
    /// Nodes whose disks the schedule makes fail, by windows open.
    failing_disks: BTreeMap<String, u32>,
    /// Nodes whose storage engines the schedule makes fail, by windows open.
    failing_storage: BTreeMap<String, u32>,
    /// Nodes whose software stopped by itself (fail-stop), since when.
    stopped_since: BTreeMap<String, Duration>,
}

impl<'a> Driver<'a> {
    pub(crate) fn new(
        cluster: &'a SimCluster,
        client_clocks: Vec<(String, Arc<SimClock>)>,
        knobs: &'a Knobs,
        shared: &'a Shared,
    ) -> Self {
        Driver {
            cluster,
            client_clocks,
            knobs,
            shared,
            fired: BTreeMap::new(),
            down: BTreeMap::new(),
            failing_disks: BTreeMap::new(),
            failing_storage: BTreeMap::new(),
            stopped_since: BTreeMap::new(),
        }
    }

    /// The workload clients' host names.
    pub(crate) fn client_hosts(&self) -> Vec<String> {
        self.client_clocks.iter().map(|(h, _)| h.clone()).collect()
    }

    /// Whether the workload's setup is over (it succeeded, or gave up).
    pub(crate) fn setup_done(&self) -> bool {
        *self.shared.setup_done.lock()
    }

    /// Whether a crash window holds `host` down.
    pub(crate) fn is_down(&self, host: &str) -> bool {
        self.down.contains_key(host)
    }

    /// Records what a schedule did that is no fault window (a handover).
    pub(crate) fn note(&self, now: Duration, what: impl std::fmt::Display) {
        self.shared.event(now, "fault", what);
    }

    /// Asks the operator host to replace a node (the `disk-wiped` schedule).
    pub(crate) fn request_replacement(&self, replacement: crate::recorder::Replacement) {
        self.shared.replacements.lock().push_back(replacement);
    }

    /// Fault windows started, by kind.
    pub(crate) fn into_fired(self) -> BTreeMap<FaultKind, u64> {
        self.fired
    }

    fn clock(&self, host: &str) -> Option<Arc<SimClock>> {
        self.cluster
            .nodes()
            .iter()
            .find(|n| n.name == host)
            .map(|n| n.clock.clone())
            .or_else(|| {
                self.client_clocks
                    .iter()
                    .find(|(h, _)| h == host)
                    .map(|(_, c)| c.clone())
            })
    }

    fn all_hosts(&self) -> Vec<String> {
        self.cluster
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .chain(self.client_clocks.iter().map(|(h, _)| h.clone()))
            .chain(["check".to_owned()])
            .collect()
    }

    pub(crate) fn apply(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        w: &Window,
        start: bool,
        now: Duration,
    ) {
        let verb = if start { "start" } else { "end" };
        self.shared.event(
            now,
            "fault",
            format_args!("{verb} {} on {} for {:?}", w.kind, w.target, w.length),
        );
        // A `late` window counts as fired once it has held a request (at its end).
        if start && w.kind != FaultKind::Late {
            *self.fired.entry(w.kind).or_default() += 1;
        }
        let true_now = (sim.since_epoch()).as_nanos() as u64;
        match (&w.kind, &w.target) {
            (FaultKind::Partition, Target::Link(a, b)) => {
                if start {
                    sim.partition(a.as_str(), b.as_str());
                } else {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
            (FaultKind::Hold, Target::Link(a, b)) => {
                if start {
                    sim.hold(a.as_str(), b.as_str());
                } else {
                    sim.release(a.as_str(), b.as_str());
                }
            }
            (FaultKind::Partition | FaultKind::Hold, Target::Isolate(h)) => {
                for other in self.all_hosts().iter().filter(|o| *o != h) {
                    match (w.kind, start) {
                        (FaultKind::Partition, true) => sim.partition(h.as_str(), other.as_str()),
                        (FaultKind::Partition, false) => sim.repair(h.as_str(), other.as_str()),
                        (_, true) => sim.hold(h.as_str(), other.as_str()),
                        (_, false) => sim.release(h.as_str(), other.as_str()),
                    }
                }
            }
            (FaultKind::Latency, _) => {
                let max = if start {
                    Duration::from_nanos(w.amount as u64)
                } else {
                    self.knobs.max_latency
                };
                sim.set_max_message_latency(max);
            }
            (FaultKind::Slow, Target::Host(h)) => {
                for other in self.all_hosts().iter().filter(|o| *o != h) {
                    if start {
                        sim.set_link_latency(
                            h.as_str(),
                            other.as_str(),
                            Duration::from_nanos(w.amount as u64),
                        );
                    } else {
                        sim.set_link_latency(h.as_str(), other.as_str(), self.knobs.min_latency);
                        sim.set_link_max_message_latency(
                            h.as_str(),
                            other.as_str(),
                            self.knobs.max_latency,
                        );
                    }
                }
            }
            (FaultKind::Crash | FaultKind::Torn, Target::Host(h)) => {
                let held = self.down.entry(h.clone()).or_default();
                if start {
                    *held += 1;
                    if *held == 1 {
                        sim.crash(h.as_str());
                        self.stopped_since.remove(h);
                    }
                } else {
                    *held -= 1;
                    if *held == 0 {
                        self.down.remove(h);
                        sim.bounce(h.as_str());
                        self.shared.event(now, "sim", format_args!("restart {h}"));
                    }
                }
            }
            (FaultKind::DiskError, Target::Host(h)) => {
                // Windows on one node may overlap: it fails until the last one ends.
                let failing = open_window(&mut self.failing_disks, h, start);
                if let Some(n) = self.cluster.nodes().iter().find(|n| n.name == *h) {
                    n.disk.set_failing(failing);
                }
            }
            (FaultKind::Clock | FaultKind::ClockBoundViolation, Target::Host(h)) => {
                if let Some(clock) = self.clock(h) {
                    if start {
                        let violating = w.kind == FaultKind::ClockBoundViolation;
                        clock.set_error(true_now, w.amount, w.drift_ppm, violating);
                    } else {
                        clock.set_error(true_now, 0, 0, false);
                    }
                }
            }
            (FaultKind::StorageError, Target::Host(h)) => {
                let failing = open_window(&mut self.failing_storage, h, start);
                if let Some(n) = self.cluster.nodes().iter().find(|n| n.name == *h) {
                    n.storage.set_failing(failing);
                }
            }
            (FaultKind::Late, Target::Host(h)) => {
                if let Some(n) = self.cluster.nodes().iter().find(|n| n.name == *h) {
                    let held = n.late.set(start, w.amount as u64);
                    if !start {
                        self.shared.event(
                            now,
                            "fault",
                            format_args!("late held {held} requests on {h}"),
                        );
                        if held > 0 {
                            *self.fired.entry(w.kind).or_default() += 1;
                        }
                    }
                }
            }
            (FaultKind::ClientCrash, Target::Host(h)) => {
                open_window(&mut self.shared.crashing.lock(), h, start);
            }
            (FaultKind::Skew, _) => {
                let bound = self.knobs.clock_bound.as_nanos() as i64;
                let offset = |ahead: bool| match (start, ahead) {
                    (false, _) => 0,
                    (true, true) => bound,
                    (true, false) => -bound,
                };
                for node in self.cluster.nodes() {
                    node.clock.set_error(true_now, offset(true), 0, false);
                }
                for (i, (_, clock)) in self.client_clocks.iter().enumerate() {
                    clock.set_error(true_now, offset(i % 2 == 0), 0, false);
                }
            }
            (FaultKind::Hostile, _) => {
                let mut open = self.shared.hostile.lock();
                *open = if start {
                    *open + 1
                } else {
                    open.saturating_sub(1)
                };
            }
            (kind, target) => unreachable!("no {kind} fault on {target}"),
        }
    }

    /// Restarts nodes whose software stopped (fail-stop after a disk error), once their
    /// disk works and no crash window holds them down — as a process supervisor would.
    pub(crate) fn supervise(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        for node in self.cluster.nodes() {
            let name = &node.name;
            if self.down.contains_key(name) {
                continue;
            }
            if sim.is_host_running(name.as_str()) {
                self.stopped_since.remove(name);
                continue;
            }
            let since = *self.stopped_since.entry(name.clone()).or_insert_with(|| {
                self.shared
                    .event(now, "sim", format_args!("{name} stopped (fail-stop)"));
                now
            });
            // Kept down while its disk still fails: a restart would only fail again.
            let failing = node.disk.is_failing();
            if !failing && now >= since + Duration::from_millis(200) {
                self.stopped_since.remove(name);
                sim.bounce(name.as_str());
                self.shared
                    .event(now, "sim", format_args!("restart {name}"));
            }
        }
    }

    /// Ends the workload phase: every fault heals.
    pub(crate) fn heal(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration) {
        self.shared.event(now, "fault", "heal everything");
        let hosts = self.all_hosts();
        for a in &hosts {
            for b in &hosts {
                if a < b {
                    sim.repair(a.as_str(), b.as_str());
                    sim.release(a.as_str(), b.as_str());
                }
            }
        }
        sim.set_max_message_latency(self.knobs.max_latency);
        let true_now = sim.since_epoch().as_nanos() as u64;
        self.failing_disks.clear();
        self.failing_storage.clear();
        self.shared.crashing.lock().clear();
        *self.shared.hostile.lock() = 0;
        for node in self.cluster.nodes() {
            node.disk.set_failing(false);
            node.storage.set_failing(false);
            node.clock.set_error(true_now, 0, 0, false);
        }
        for (_, clock) in &self.client_clocks {
            clock.set_error(true_now, 0, 0, false);
        }
        for (name, _) in std::mem::take(&mut self.down) {
            sim.bounce(name.as_str());
            self.shared
                .event(now, "sim", format_args!("restart {name}"));
        }
    }
}

/// Counts a window opening (`start`) or closing on `host` in `open`; whether any window is
/// still open on it afterwards (windows of one kind may overlap on one host).
fn open_window(open: &mut BTreeMap<String, u32>, host: &str, start: bool) -> bool {
    let held = open.entry(host.to_owned()).or_default();
    if start {
        *held += 1;
    } else {
        *held = held.saturating_sub(1);
    }
    let still = *held > 0;
    if !still {
        open.remove(host);
    }
    still
}
