//! Regression (hardening defect 9): a record the journal refused unwritten (over its
//! record limit) made the adjudicator step down as if the append might have happened, so
//! one oversized request stopped the partition. Now the decision is undone, the request is
//! refused as invalid, and the partition goes on deciding.

use std::sync::Arc;

use journaldb_adjudicator::{
    Adjudicator, AdjudicatorConfig, CommitDecision, CommitRequest, Partition, Refusal, TxnStatus,
};
use journaldb_journal::{Journal, JournalOptions};
use journaldb_proto::{Clock, EmbeddedClock, Mutation, PartitionId, Timestamp, TxnId};

use crate::service::runtime;

#[test]
fn a_record_refused_unwritten_does_not_step_the_adjudicator_down() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            max_record_bytes: 1024,
            ..JournalOptions::default()
        };
        let journal = Arc::new(Journal::open(dir.path(), options).unwrap());
        let id = PartitionId::new(0);
        let adj = Adjudicator::new(id, AdjudicatorConfig::default(), Timestamp::ZERO);
        let part = Partition::new(id, adj, journal);
        let clock = EmbeddedClock::new(Timestamp::ZERO);
        let request = |txn: u128, value: usize| CommitRequest {
            txn_id: TxnId::new(txn),
            start_ts: clock.now().latest,
            mutations: vec![Mutation::put("k", vec![b'v'; value])],
            retry: false,
        };
        let refused = part.commit(clock.now(), &request(1, 4096)).await;
        assert!(
            matches!(refused, Err(Refusal::Decision(CommitDecision::Invalid(_)))),
            "{refused:?}"
        );
        assert!(!part.adjudicator().is_stepped_down());
        // The refused transaction left no outcome behind: a question about it aborts it.
        let status = part
            .status(clock.now(), TxnId::new(1), clock.now().latest)
            .await;
        assert_eq!(status, Ok(TxnStatus::Aborted));
        // And the partition still commits.
        let committed = part.commit(clock.now(), &request(2, 16)).await.unwrap();
        let status = part
            .status(clock.now(), TxnId::new(2), clock.now().latest)
            .await;
        assert_eq!(status, Ok(TxnStatus::Committed(committed)));
    });
}
