//! The job state machine as a pure function.
//!
//! ```text
//!             claim                 complete
//!  pending ----------> running ------------------> completed
//!    |  ^                 |  \----- fail -------> failed
//!    |  |  requeue        |  \----- cancel ack --> cancelled
//!    |  +-----------------+
//!    +-- cancel ------------------------------------> cancelled
//!    +-- pending timeout ---------------------------> failed (code pending_timeout)
//! ```
//!
//! Stores enforce the same machine in SQL (`UPDATE ... WHERE status = ...`); this function is
//! the reference the conformance suite's model checks them against, and the source of the
//! typed [`IllegalTransition`] errors stores return.

use std::fmt;

use crate::job::JobStatus;

/// Something that moves a job from one status to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transition {
    /// A worker claims a pending job.
    Claim,
    /// The runner records success.
    Complete,
    /// The runner records a failure (terminal error, attempts exhausted, panic).
    Fail,
    /// The job goes back to pending: retryable error, lost heartbeat, or shutdown.
    Requeue,
    /// A cancel request: a pending job is cancelled at once, a running one is flagged.
    Cancel,
    /// The runner acknowledges a cancel: the handler stopped.
    AckCancel,
    /// The rescuer fails a running job whose heartbeat is stale and whose attempts are used.
    ExpireLease,
    /// The rescuer fails a job that stayed pending past `pending_timeout`.
    PendingTimeout,
}

impl Transition {
    /// Every transition, for tests that check the whole state machine.
    pub const ALL: [Transition; 8] = [
        Transition::Claim,
        Transition::Complete,
        Transition::Fail,
        Transition::Requeue,
        Transition::Cancel,
        Transition::AckCancel,
        Transition::ExpireLease,
        Transition::PendingTimeout,
    ];

    /// The status a job in `from` reaches by this transition, or the typed error.
    pub fn apply(self, from: JobStatus) -> Result<JobStatus, IllegalTransition> {
        use JobStatus::*;
        let to = match (self, from) {
            (Transition::Claim, Pending) => Running,
            (Transition::Complete, Running) => Completed,
            (Transition::Fail, Running) => Failed,
            (Transition::Requeue, Running) => Pending,
            (Transition::Cancel, Pending) => Cancelled,
            (Transition::Cancel, Running) => Running,
            (Transition::AckCancel, Running) => Cancelled,
            (Transition::ExpireLease, Running) => Failed,
            (Transition::PendingTimeout, Pending) => Failed,
            _ => {
                return Err(IllegalTransition {
                    from,
                    transition: self,
                });
            }
        };
        Ok(to)
    }

    /// The transition as a verb phrase for error messages, `cannot {this} a {status} job`:
    /// `claim`, `expire the lease of`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transition::Claim => "claim",
            Transition::Complete => "complete",
            Transition::Fail => "fail",
            Transition::Requeue => "requeue",
            Transition::Cancel => "cancel",
            Transition::AckCancel => "acknowledge the cancel of",
            Transition::ExpireLease => "expire the lease of",
            Transition::PendingTimeout => "time out",
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition that the state machine does not allow from the job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition} a {from} job")]
pub struct IllegalTransition {
    /// The status the job was in.
    pub from: JobStatus,
    /// What was attempted.
    pub transition: Transition,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_accept_no_transition() {
        for from in JobStatus::TERMINAL {
            for transition in Transition::ALL {
                assert_eq!(
                    transition.apply(from),
                    Err(IllegalTransition { from, transition }),
                    "{transition} from {from}"
                );
            }
        }
    }

    #[test]
    fn only_claim_leads_into_running_from_pending() {
        for transition in Transition::ALL {
            if transition.apply(JobStatus::Pending) == Ok(JobStatus::Running) {
                assert_eq!(transition, Transition::Claim);
            }
        }
    }

    #[test]
    fn every_status_is_reachable_from_pending() {
        let mut seen = vec![JobStatus::Pending];
        let mut frontier = vec![JobStatus::Pending];
        while let Some(from) = frontier.pop() {
            for transition in Transition::ALL {
                if let Ok(to) = transition.apply(from)
                    && !seen.contains(&to)
                {
                    seen.push(to);
                    frontier.push(to);
                }
            }
        }
        for status in JobStatus::ALL {
            assert!(seen.contains(&status), "{status} unreachable");
        }
    }

    #[test]
    fn illegal_transition_message_names_both_sides() {
        let error = Transition::Complete.apply(JobStatus::Pending).unwrap_err();
        assert_eq!(error.to_string(), "cannot complete a pending job");
    }
}
