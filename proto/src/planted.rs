//! [`PlantedBug`]: the one list of bugs a test or the simulation can plant on purpose, to
//! show that its checkers catch each (FoundationDB's `BUGGIFY`-style switches, but named
//! and never random). Every role reads the same type from its settings — the adjudicator's
//! `AdjudicatorConfig::planted_bug`, the storage server's `StorageServerConfig::planted_bug`
//! — and the simulation's `--plant NAME` parses it. Never set outside tests and simulation.

/// A bug planted on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// Adjudicators commit without checking `last_write`: lost updates and read skew.
    SkipConflictCheck,
    /// Adjudicators acknowledge a commit once its record is queued, before it is durable:
    /// a crash then loses acknowledged commits.
    AckBeforeDurable,
    /// Storage replicas answer reads without waiting for the watermark: stale reads.
    IgnoreWatermark,
    /// The coordinator's abort binds nothing: commit requests ignore its abort marks, a
    /// `CommitPrepared` needs no vote of the coordinator's own (which the abort decides),
    /// and a refused retry is not made binding. A `CommitPrepared` delayed past the
    /// client's `Status` question commits after `transact` re-ran the transaction, and a
    /// commit delayed past its refused retry likewise: applied twice (hardening defects 2
    /// and 6).
    IgnoreAbortMarks,
    /// Participants never resolve undecided votes: a client that dies between its
    /// prepares and its `Decide` keeps its keys pending for good (hardening defect 1).
    NoVoteTimeout,
    /// `Promise` requests from outside the node are served as asked: a client can drag a
    /// partition's floor (and every later commit τ and commit wait) far into the future
    /// (hardening defect 4).
    TrustPromises,
    /// A storage node forgets a batch before its store has written it: a failed write then
    /// loses records and the watermark passes them (hardening defect 3).
    ReleaseBeforeWrite,
    /// Storage answers reads of versions still in the future of its clock (hardening
    /// defect 10).
    SkipVisibilityWait,
    /// A client process restarted after a crash draws its transaction ids from the same
    /// seed as the one that died: it reuses ids, and an adjudicator answers a new
    /// transaction with an old one's outcome (hardening defect 8).
    ReuseTxnIds,
    /// A queued record's durability is learned only by the request that queued it: when
    /// the request's future is dropped (its client went away), its outcome stays in flight
    /// and the votes waiting on it stay pending (hardening defect 5).
    ForgetQueuedOutcomes,
    /// The new leader of a replicated journal serves its partition without replaying the
    /// log before its `EpochStart`: it knows none of the earlier commits, votes or
    /// aborts (lost updates, keys no longer pending) and starts its floor from zero (τs
    /// below earlier ones).
    ServeWithoutReplay,
    /// A retried `Prepare` is answered with the vote from memory while the `Prepared`
    /// record of the first one may not be durable (committed) yet: a vote the coordinator
    /// counts can be lost with that record (ARCHITECTURE §5 rule 1).
    VoteFromMemory,
    /// A coordinator's abort is reported (to `Status` and to retried commit requests) as
    /// soon as it is decided, before its `Decided` record is durable (committed): a
    /// failover that loses the record forgets the abort a participant or a client already
    /// acted on, and a late `CommitPrepared` commits it (§5 rule 1).
    AbortFromMemory,
    /// A replicated journal acknowledges a record once its Lsn is applied on the leader,
    /// whatever term committed the entry holding it — the index checked, not the term: a
    /// later leader's different record at that Lsn is taken for it (§5 rule 1, figure 8).
    AckInLaterTerm,
    /// A node that leads a partition's group again in a later term goes on with its
    /// adjudicator of the earlier term (its floor, its conflict window) and proposes its
    /// batches in the new term, instead of taking over from the log (§5 rule 2).
    ProposeInLaterTerm,
    /// A leader reports its own write of the Raft log persisted before the fsync, so its
    /// copy counts towards the majority while a crash can still lose it (§5 rule 3).
    PersistBeforeFsync,
}

impl PlantedBug {
    /// Every planted bug, with its name (as `--plant` takes it).
    pub const ALL: [(PlantedBug, &'static str); 16] = [
        (PlantedBug::SkipConflictCheck, "skip-conflict-check"),
        (PlantedBug::AckBeforeDurable, "ack-before-durable"),
        (PlantedBug::IgnoreWatermark, "ignore-watermark"),
        (PlantedBug::IgnoreAbortMarks, "ignore-abort-marks"),
        (PlantedBug::NoVoteTimeout, "no-vote-timeout"),
        (PlantedBug::TrustPromises, "trust-promises"),
        (PlantedBug::ReleaseBeforeWrite, "release-before-write"),
        (PlantedBug::SkipVisibilityWait, "skip-visibility-wait"),
        (PlantedBug::ReuseTxnIds, "reuse-txn-ids"),
        (PlantedBug::ForgetQueuedOutcomes, "forget-queued-outcomes"),
        (PlantedBug::ServeWithoutReplay, "serve-without-replay"),
        (PlantedBug::VoteFromMemory, "vote-from-memory"),
        (PlantedBug::AbortFromMemory, "abort-from-memory"),
        (PlantedBug::AckInLaterTerm, "ack-in-later-term"),
        (PlantedBug::ProposeInLaterTerm, "propose-in-later-term"),
        (PlantedBug::PersistBeforeFsync, "persist-before-fsync"),
    ];
}

impl std::str::FromStr for PlantedBug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        PlantedBug::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(bug, _)| *bug)
            .ok_or_else(|| {
                let known: Vec<&str> = PlantedBug::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown planted bug {s:?}; known: {}", known.join(", "))
            })
    }
}

impl std::fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = PlantedBug::ALL
            .iter()
            .find(|(bug, _)| bug == self)
            .map_or("?", |(_, name)| name);
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bug_has_one_name_that_parses_back() {
        for (bug, name) in PlantedBug::ALL {
            assert_eq!(name.parse::<PlantedBug>(), Ok(bug));
            assert_eq!(bug.to_string(), name);
        }
        let names: std::collections::BTreeSet<_> = PlantedBug::ALL.iter().map(|(_, n)| n).collect();
        assert_eq!(names.len(), PlantedBug::ALL.len());
        assert!(
            "no-such-bug"
                .parse::<PlantedBug>()
                .unwrap_err()
                .contains("known:")
        );
    }
}
