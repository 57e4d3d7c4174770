//! [`GroupConfig`]: the settings every journal's Raft group runs with (ARCHITECTURE §5,
//! rule 5; the shared RAFT.md §3 says what each raft-rs knob does and why these values).

/// Settings of one journal's Raft group, the same on every replica except the election
/// timeout (see [`crate::ElectionTiming`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupConfig {
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The base election timeout in ticks (`E`): check-quorum and the vote lease count it;
    /// each voter's own timeout lies in `[E, 2E)`.
    pub election_ticks: usize,
    /// Most bytes of entries in one append message (raft-rs's default 0 means one entry
    /// per message). Below the gRPC message limit.
    pub max_message_bytes: u64,
    /// Most append messages in flight to one follower.
    pub max_inflight_messages: usize,
    /// Most bytes of entries proposed but not yet committed; more is dropped (the
    /// adjudicator then steps down: an append failure).
    pub max_uncommitted_bytes: u64,
    /// Most bytes of committed entries handed out by one `Ready`.
    pub max_committed_bytes_per_ready: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            heartbeat_ticks: 2,
            election_ticks: 10,
            max_message_bytes: 1 << 20,
            max_inflight_messages: 32,
            max_uncommitted_bytes: 64 << 20,
            max_committed_bytes_per_ready: 16 << 20,
        }
    }
}

/// Settings no group can run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting out of its range.
    #[error("invalid Raft group setting: {0}")]
    Invalid(String),
    /// raft-rs refused the settings.
    #[error("raft-rs refused the settings: {0}")]
    Refused(String),
}

impl GroupConfig {
    /// Checks the settings on their own.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.heartbeat_ticks == 0 {
            return invalid("heartbeat_ticks must be at least 1".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return invalid(format!(
                "election_ticks ({}) must exceed heartbeat_ticks ({})",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        for (name, value) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            (
                "max_committed_bytes_per_ready",
                self.max_committed_bytes_per_ready,
            ),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1 (0 is unbounded)"));
            }
        }
        if self.max_inflight_messages == 0 {
            return invalid("max_inflight_messages must be at least 1".into());
        }
        Ok(())
    }

    /// The raft-rs settings of replica `id` whose election timeout is `election_timeout`
    /// ticks (from [`crate::ElectionTiming::timeout`]: in `[E, 2E)`), validated by raft-rs
    /// too. The one-value range makes raft-rs's own draw from the thread RNG fixed.
    pub fn raft_config(
        &self,
        id: u64,
        election_timeout: usize,
    ) -> Result<raft::Config, ConfigError> {
        self.validate()?;
        if id == 0 {
            return Err(ConfigError::Invalid(
                "replica id 0 is raft-rs's \"none\"".into(),
            ));
        }
        if !(self.election_ticks..2 * self.election_ticks).contains(&election_timeout) {
            return Err(ConfigError::Invalid(format!(
                "an election timeout of {election_timeout} ticks is outside [{}, {})",
                self.election_ticks,
                2 * self.election_ticks
            )));
        }
        let config = raft::Config {
            id,
            heartbeat_tick: self.heartbeat_ticks,
            election_tick: self.election_ticks,
            min_election_tick: election_timeout,
            max_election_tick: election_timeout + 1,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: self.max_message_bytes,
            max_inflight_msgs: self.max_inflight_messages,
            max_uncommitted_size: self.max_uncommitted_bytes,
            max_committed_size_per_ready: self.max_committed_bytes_per_ready,
            // Followers' commit index reaches storage tailers promptly (RAFT.md §3).
            skip_bcast_commit: false,
            ..raft::Config::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Refused(e.to_string()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_give_a_config_raft_accepts_with_a_one_value_timeout_range() {
        let config = GroupConfig::default().raft_config(3, 14).unwrap();
        assert_eq!(
            (config.min_election_tick, config.max_election_tick),
            (14, 15)
        );
        assert!(config.pre_vote && config.check_quorum);
        assert!(config.max_size_per_msg > 0 && config.max_uncommitted_size < u64::MAX);
    }

    #[test]
    fn settings_no_group_can_run_with_are_refused() {
        let bad = |f: fn(&mut GroupConfig)| {
            let mut c = GroupConfig::default();
            f(&mut c);
            match c.raft_config(1, 10) {
                Err(e) => e,
                Ok(_) => panic!("accepted {c:?}"),
            }
        };
        assert!(matches!(
            bad(|c| c.heartbeat_ticks = 0),
            ConfigError::Invalid(_)
        ));
        assert!(matches!(
            bad(|c| c.election_ticks = 2),
            ConfigError::Invalid(_)
        ));
        assert!(matches!(
            bad(|c| c.max_message_bytes = 0),
            ConfigError::Invalid(_)
        ));
        assert!(matches!(
            bad(|c| c.max_inflight_messages = 0),
            ConfigError::Invalid(_)
        ));
        let c = GroupConfig::default();
        assert!(matches!(c.raft_config(0, 10), Err(ConfigError::Invalid(_))));
        assert!(matches!(c.raft_config(1, 9), Err(ConfigError::Invalid(_))));
        assert!(matches!(c.raft_config(1, 20), Err(ConfigError::Invalid(_))));
    }
}
