//! A property test: random operations against the store and a reference model, with the
//! invariants checked after every step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::Fixture;
use crate::{
    Acquire, ChainStep, ClaimParams, Finish, FinishChain, FinishOutcome, HeartbeatParams, JobError,
    JobId, JobQuery, JobStatus, JobStore, Lease, LockError, LockService, RecoveryPolicy,
    StoreError, Transition,
};

const KEYS: u8 = 2;
const MAX_ATTEMPTS: u32 = 2;
/// Longest chain an acquired job carries (steps of the case's own job type).
const MAX_CHAIN: u8 = 2;

#[derive(Debug, Clone, Copy)]
enum FinishKind {
    Complete,
    Fail,
    Cancelled,
    Retry,
    Interrupt,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        key: u8,
        chain: u8,
    },
    Claim {
        limit: u32,
    },
    Heartbeat {
        job: usize,
        stale: bool,
        checkpoint: Option<u8>,
    },
    Finish {
        job: usize,
        stale: bool,
        kind: FinishKind,
    },
    Cancel {
        job: usize,
    },
    Resume {
        job: usize,
    },
    Advance {
        seconds: u64,
    },
    Rescue,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(FinishKind::Complete),
        Just(FinishKind::Fail),
        Just(FinishKind::Cancelled),
        Just(FinishKind::Retry),
        Just(FinishKind::Interrupt),
    ];
    prop_oneof![
        3 => (0..KEYS, 0..=MAX_CHAIN).prop_map(|(key, chain)| Op::Acquire { key, chain }),
        3 => (1..3u32).prop_map(|limit| Op::Claim { limit }),
        2 => (any::<usize>(), any::<bool>(), proptest::option::of(any::<u8>()))
            .prop_map(|(job, stale, checkpoint)| Op::Heartbeat { job, stale, checkpoint }),
        3 => (any::<usize>(), any::<bool>(), kind)
            .prop_map(|(job, stale, kind)| Op::Finish { job, stale, kind }),
        1 => any::<usize>().prop_map(|job| Op::Cancel { job }),
        1 => any::<usize>().prop_map(|job| Op::Resume { job }),
        2 => prop_oneof![Just(1u64), Just(10), Just(31), Just(700)]
            .prop_map(|seconds| Op::Advance { seconds }),
        1 => Just(Op::Rescue),
    ]
}

/// The model's view of one job.
#[derive(Debug, Clone)]
struct ModelJob {
    id: JobId,
    key: String,
    status: JobStatus,
    attempt: u32,
    cancel_requested: bool,
    checkpoint: Option<serde_json::Value>,
    run_at: DateTime<Utc>,
    heartbeat_at: Option<DateTime<Utc>>,
    lease: Lease,
    past_leases: Vec<Lease>,
    /// Steps left in its chain.
    then: u8,
    previous_job_id: Option<JobId>,
    next_job_id: Option<JobId>,
}

impl ModelJob {
    /// The lease a write names: the job's own, or (`stale`) the one a worker held before.
    fn lease_to_write(&self, stale: bool) -> Lease {
        if stale {
            Lease(self.lease.0 - 1)
        } else {
            self.lease
        }
    }
}

struct Model {
    jobs: Vec<ModelJob>,
    policy: RecoveryPolicy,
}

impl Model {
    fn to_chrono(duration: Duration) -> chrono::Duration {
        chrono::Duration::from_std(duration).unwrap()
    }

    fn active(&self, key: &str) -> Option<usize> {
        self.jobs
            .iter()
            .position(|job| job.key == key && job.status.is_active())
    }

    /// The rescue rules, applied to the jobs of `key` (or all).
    fn rescue(&mut self, key: Option<&str>, now: DateTime<Utc>) {
        let stale_before = now - Self::to_chrono(self.policy.stale_after);
        let pending_before = now - Self::to_chrono(self.policy.pending_timeout);
        for job in self
            .jobs
            .iter_mut()
            .filter(|job| key.is_none_or(|key| job.key == key))
        {
            match job.status {
                JobStatus::Running if job.heartbeat_at.unwrap() < stale_before => {
                    job.status = if job.cancel_requested {
                        JobStatus::Cancelled
                    } else if job.attempt < MAX_ATTEMPTS {
                        job.run_at = now;
                        JobStatus::Pending
                    } else {
                        JobStatus::Failed
                    };
                }
                JobStatus::Pending if job.run_at < pending_before => job.status = JobStatus::Failed,
                _ => {}
            }
        }
    }

    fn is_stuck(&self, index: usize, now: DateTime<Utc>) -> bool {
        let job = &self.jobs[index];
        match job.status {
            JobStatus::Running => {
                job.heartbeat_at.unwrap() < now - Self::to_chrono(self.policy.stale_after)
            }
            JobStatus::Pending => job.run_at < now - Self::to_chrono(self.policy.pending_timeout),
            _ => false,
        }
    }

    /// What an acquire (or resume) for `key` must answer: `Some(active)` for Busy.
    fn acquire(&mut self, key: &str, now: DateTime<Utc>) -> Option<JobId> {
        if let Some(index) = self.active(key)
            && self.is_stuck(index, now)
        {
            self.rescue(Some(key), now);
        }
        self.active(key).map(|index| self.jobs[index].id)
    }

    fn insert(
        &mut self,
        id: JobId,
        key: &str,
        checkpoint: Option<serde_json::Value>,
        then: u8,
        now: DateTime<Utc>,
    ) -> &mut ModelJob {
        self.jobs.push(ModelJob {
            id,
            key: key.to_owned(),
            status: JobStatus::Pending,
            attempt: 0,
            cancel_requested: false,
            checkpoint,
            run_at: now,
            heartbeat_at: None,
            lease: Lease(0),
            past_leases: Vec::new(),
            then,
            previous_job_id: None,
            next_job_id: None,
        });
        self.jobs.last_mut().expect("just pushed")
    }

    fn due(&self, limit: u32, now: DateTime<Utc>) -> Vec<JobId> {
        let mut due: Vec<&ModelJob> = self
            .jobs
            .iter()
            .filter(|job| job.status == JobStatus::Pending && job.run_at <= now)
            .collect();
        due.sort_by_key(|job| (job.run_at, job.id));
        due.into_iter()
            .take(limit as usize)
            .map(|job| job.id)
            .collect()
    }
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

fn lease_lost<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::LeaseLost { .. }))
}

async fn run_case(
    store: Arc<dyn JobStore>,
    case: usize,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut run = CaseRun::new(store, case);
    for op in ops {
        run.apply(op).await?;
        check_invariants(&run.store, &run.job_type, &run.model).await?;
    }
    Ok(())
}

/// One case: the store under test, the model it is compared with, and the clock both read.
struct CaseRun {
    store: Arc<dyn JobStore>,
    lock: LockService,
    fx: Fixture,
    model: Model,
    job_type: String,
    case: usize,
}

impl CaseRun {
    fn new(store: Arc<dyn JobStore>, case: usize) -> Self {
        let fx = Fixture::new(store.clone());
        let lock = LockService::new(store.clone(), fx.clock.clone(), RecoveryPolicy::default())
            .with_max_attempts(MAX_ATTEMPTS);
        let model = Model {
            jobs: Vec::new(),
            policy: lock.policy(),
        };
        Self {
            store,
            lock,
            fx,
            model,
            job_type: format!("model.case{case}"),
            case,
        }
    }

    /// Applies `op` to the store and the model, checking the store's answer.
    async fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.fx.now();
        match op {
            Op::Acquire { key, chain } => self.acquire(key, chain, now).await,
            Op::Claim { limit } => self.claim(limit, now).await,
            Op::Heartbeat {
                job,
                stale,
                checkpoint,
            } => self.heartbeat(job, stale, checkpoint, now).await,
            Op::Finish { job, stale, kind } => self.finish(job, stale, kind, now).await,
            Op::Cancel { job } => self.cancel(job, now).await,
            Op::Resume { job } => self.resume(job, now).await,
            Op::Advance { seconds } => {
                self.fx.advance(Duration::from_secs(seconds));
                Ok(())
            }
            Op::Rescue => {
                self.model.rescue(None, now);
                self.lock.rescue().await.unwrap();
                Ok(())
            }
        }
    }

    /// The index of the model's job an op names, if there is any job yet.
    fn pick(&self, job: usize) -> Option<usize> {
        (!self.model.jobs.is_empty()).then(|| job % self.model.jobs.len())
    }

    async fn acquire(
        &mut self,
        key: u8,
        chain: u8,
        now: DateTime<Utc>,
    ) -> Result<(), TestCaseError> {
        let key = format!("case{}-key{key}", self.case);
        let expected = self.model.acquire(&key, now);
        let then = (0..chain)
            .map(|_| ChainStep::new(&self.job_type, serde_json::json!({})))
            .collect();
        match self
            .lock
            .acquire_chain(&key, &self.job_type, serde_json::json!({}), then)
            .await
            .unwrap()
        {
            Acquire::Created(job) => {
                check(expected.is_none(), || {
                    format!("created while {expected:?} active")
                })?;
                self.model.insert(job.id, &key, None, chain, now);
            }
            Acquire::Busy(job) => check(expected == Some(job.id), || {
                format!("busy with {} but model expected {expected:?}", job.id)
            })?,
        }
        Ok(())
    }

    async fn claim(&mut self, limit: u32, now: DateTime<Utc>) -> Result<(), TestCaseError> {
        let expected = self.model.due(limit, now);
        let params = ClaimParams {
            worker_id: "model".into(),
            job_types: vec![self.job_type.clone()],
            limit,
            now,
        };
        let mut claimed = self.store.claim(&params).await.unwrap();
        claimed.sort_by_key(|job| (job.run_at, job.id));
        let ids: Vec<JobId> = claimed.iter().map(|job| job.id).collect();
        check(ids == expected, || {
            format!("claimed {ids:?}, model expected {expected:?}")
        })?;
        for job in claimed {
            let model_job = self.model.jobs.iter_mut().find(|m| m.id == job.id).unwrap();
            check(
                !model_job.past_leases.contains(&job.lease) && job.lease != model_job.lease,
                || format!("lease {} reused on job {}", job.lease, job.id),
            )?;
            model_job.past_leases.push(model_job.lease);
            model_job.lease = job.lease;
            model_job.status = JobStatus::Running;
            model_job.attempt += 1;
            model_job.heartbeat_at = Some(now);
        }
        Ok(())
    }

    async fn heartbeat(
        &mut self,
        job: usize,
        stale: bool,
        checkpoint: Option<u8>,
        now: DateTime<Utc>,
    ) -> Result<(), TestCaseError> {
        let Some(index) = self.pick(job) else {
            return Ok(());
        };
        let model_job = &mut self.model.jobs[index];
        let lease = model_job.lease_to_write(stale);
        let checkpoint = checkpoint.map(|value| serde_json::json!(value));
        let params = HeartbeatParams {
            id: model_job.id,
            lease,
            now,
            progress: None,
            checkpoint: checkpoint.clone(),
        };
        let result = self.store.heartbeat(&params).await;
        if model_job.status == JobStatus::Running && !stale {
            let ack = result.map_err(|error| TestCaseError::fail(error.to_string()))?;
            check(ack.cancel_requested == model_job.cancel_requested, || {
                "cancel flag".into()
            })?;
            model_job.heartbeat_at = Some(now);
            if checkpoint.is_some() {
                model_job.checkpoint = checkpoint;
            }
        } else {
            check(lease_lost(&result), || {
                format!("heartbeat should lose: {result:?}")
            })?;
        }
        Ok(())
    }

    async fn finish(
        &mut self,
        job: usize,
        stale: bool,
        kind: FinishKind,
        now: DateTime<Utc>,
    ) -> Result<(), TestCaseError> {
        let Some(index) = self.pick(job) else {
            return Ok(());
        };
        let model_job = &mut self.model.jobs[index];
        let lease = model_job.lease_to_write(stale);
        let error = JobError::new("model", "model error", true);
        let outcome = match kind {
            FinishKind::Complete => FinishOutcome::Completed,
            FinishKind::Fail => FinishOutcome::Failed(error),
            FinishKind::Cancelled => FinishOutcome::Cancelled,
            FinishKind::Retry => FinishOutcome::Requeue {
                error,
                run_at: now + chrono::Duration::seconds(5),
                consume_attempt: true,
            },
            FinishKind::Interrupt => FinishOutcome::Requeue {
                error,
                run_at: now,
                consume_attempt: false,
            },
        };
        let chain = if model_job.then > 0 {
            FinishChain::Chained
        } else {
            FinishChain::Unchained
        };
        let finish = Finish {
            chain,
            ..Finish::new(model_job.id, lease, outcome)
        };
        let result = self.store.finish_one(now, finish).await;
        if model_job.status == JobStatus::Running && !stale {
            let status = result.map_err(|error| TestCaseError::fail(error.to_string()))?;
            model_job.status = match kind {
                FinishKind::Complete => JobStatus::Completed,
                FinishKind::Fail => JobStatus::Failed,
                FinishKind::Cancelled => JobStatus::Cancelled,
                _ if model_job.cancel_requested => JobStatus::Cancelled,
                FinishKind::Retry if model_job.attempt >= MAX_ATTEMPTS => JobStatus::Failed,
                FinishKind::Retry => {
                    model_job.run_at = now + chrono::Duration::seconds(5);
                    JobStatus::Pending
                }
                FinishKind::Interrupt => {
                    model_job.attempt -= 1;
                    model_job.run_at = now;
                    JobStatus::Pending
                }
            };
            check(status == model_job.status, || {
                format!("finish gave {status}")
            })?;
            // A completion continues the chain: the completed job was the active one
            // of its key and type, so the next one (of the same type) is inserted.
            if status == JobStatus::Completed && model_job.then > 0 {
                let (id, key, then) = (model_job.id, model_job.key.clone(), model_job.then);
                let next = self.store.get(id).await.unwrap().next_job_id;
                let next = next.ok_or_else(|| {
                    TestCaseError::fail(format!("completion of {id} inserted no next job"))
                })?;
                self.model.jobs[index].next_job_id = Some(next);
                self.model
                    .insert(next, &key, None, then - 1, now)
                    .previous_job_id = Some(id);
            }
        } else {
            check(lease_lost(&result), || {
                format!("finish should lose: {result:?}")
            })?;
        }
        Ok(())
    }

    async fn cancel(&mut self, job: usize, now: DateTime<Utc>) -> Result<(), TestCaseError> {
        let Some(index) = self.pick(job) else {
            return Ok(());
        };
        let model_job = &mut self.model.jobs[index];
        let result = self.store.request_cancel(model_job.id, now).await;
        match Transition::Cancel.apply(model_job.status) {
            Ok(to) => {
                let job = result.map_err(|error| TestCaseError::fail(error.to_string()))?;
                model_job.status = to;
                model_job.cancel_requested = true;
                check(job.status == to, || format!("cancel gave {job:?}"))?;
            }
            Err(_) => check(
                matches!(result, Err(StoreError::IllegalTransition { .. })),
                || format!("cancel should be illegal: {result:?}"),
            )?,
        }
        Ok(())
    }

    async fn resume(&mut self, job: usize, now: DateTime<Utc>) -> Result<(), TestCaseError> {
        let Some(index) = self.pick(job) else {
            return Ok(());
        };
        let old = self.model.jobs[index].clone();
        let result = self.lock.resume(old.id).await;
        if matches!(old.status, JobStatus::Failed | JobStatus::Cancelled) {
            let expected = self.model.acquire(&old.key, now);
            match result.map_err(|error| TestCaseError::fail(error.to_string()))? {
                Acquire::Created(job) => {
                    check(expected.is_none(), || "resume created while busy".into())?;
                    check(job.checkpoint == old.checkpoint, || {
                        "checkpoint not copied".into()
                    })?;
                    self.model
                        .insert(job.id, &old.key, old.checkpoint.clone(), old.then, now);
                }
                Acquire::Busy(job) => check(expected == Some(job.id), || {
                    "resume busy with wrong job".into()
                })?,
            }
        } else {
            check(
                matches!(result, Err(LockError::NotResumable { .. })),
                || format!("resume of {} should be refused: {result:?}", old.status),
            )?;
        }
        Ok(())
    }
}

async fn check_invariants(
    store: &Arc<dyn JobStore>,
    job_type: &str,
    model: &Model,
) -> Result<(), TestCaseError> {
    let query = JobQuery {
        resource_key: None,
        job_type: Some(job_type.to_owned()),
        limit: 10_000,
        ..JobQuery::default()
    };
    let stored = store.list(&query).await.unwrap();
    check(stored.len() == model.jobs.len(), || {
        "job count differs".into()
    })?;
    let mut active_per_key: HashMap<&str, usize> = HashMap::new();
    for job in &stored {
        let expected = model.jobs.iter().find(|m| m.id == job.id).unwrap();
        check(job.status == expected.status, || {
            format!(
                "job {} is {} in the store, {} in the model",
                job.id, job.status, expected.status
            )
        })?;
        check(job.attempt == expected.attempt, || {
            format!("attempt of {job:?}")
        })?;
        check(job.attempt <= job.max_attempts, || {
            format!("attempts exceeded: {job:?}")
        })?;
        check(job.checkpoint == expected.checkpoint, || {
            format!("checkpoint of {job:?}")
        })?;
        check(
            job.then.len() == usize::from(expected.then)
                && job.previous_job_id == expected.previous_job_id
                && job.next_job_id == expected.next_job_id,
            || format!("chain of {job:?}, expected {expected:?}"),
        )?;
        check(
            job.status.is_terminal() == job.finished_at.is_some(),
            || format!("finished_at and status disagree: {job:?}"),
        )?;
        if job.status == JobStatus::Running {
            check(job.lease == expected.lease, || {
                format!("running lease differs: {job:?}")
            })?;
        }
        if job.status.is_active() {
            *active_per_key.entry(&expected.key).or_default() += 1;
        }
    }
    check(active_per_key.values().all(|count| *count <= 1), || {
        "two active jobs for one key".into()
    })
}

/// Random sequences of acquire (with or without a chain), claim, heartbeat, finish (with live
/// and stale leases), cancel, resume, time moves and rescues, run against the store and a
/// reference model (a completion continues its chain);
/// after every step the store must equal the model, keep at most one active job per key,
/// keep attempts within `max_attempts`, and keep `finished_at` set exactly on terminal jobs.
/// A failure is shrunk to a minimal sequence of operations.
pub async fn random_operations_match_the_reference_model(store: Arc<dyn JobStore>) {
    const CASES: u32 = 24;
    const MAX_SHRINK_STEPS: u32 = 300;
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec(op_strategy(), 1..40);
    let mut case = 0;
    for _ in 0..CASES {
        let mut tree = strategy.new_tree(&mut runner).expect("generate operations");
        case += 1;
        let Err(mut failure) = run_case(store.clone(), case, tree.current()).await else {
            continue;
        };
        let mut minimal = tree.current();
        let mut steps = 0;
        let mut more = tree.simplify();
        while more && steps < MAX_SHRINK_STEPS {
            steps += 1;
            case += 1;
            let candidate = tree.current();
            match run_case(store.clone(), case, candidate.clone()).await {
                Err(error) => {
                    failure = error;
                    minimal = candidate;
                    more = tree.simplify();
                }
                Ok(()) => more = tree.complicate(),
            }
        }
        panic!("store and model disagree: {failure}\nminimal operations: {minimal:#?}");
    }
}
