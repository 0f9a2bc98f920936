//! Enqueueing in a caller's transaction: a job exists only if the transaction commits, and
//! one active job per (resource, job type) holds inside the transaction as outside it.
//!
//! These cases take, besides the store, [`Transactions`]: the store crate's way to open a
//! transaction on the same database (the caller's side of
//! [`InTransaction`](crate::InTransaction)). A store crate runs them with
//! [`conformance_transaction_cases!`](crate::conformance_transaction_cases).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Fixture, TEST_TYPE};
use crate::runtime::HandlerError;
use crate::typed::{self, Context};
use crate::{Acquire, AcquireRequest, InTransaction, JobStatus, JobStore, StoreError};

/// Opens transactions on the database of the store under test.
#[async_trait]
pub trait Transactions: Send + Sync {
    /// A new transaction, begun.
    async fn begin(&self) -> Box<dyn OpenTransaction>;
}

/// A transaction the cases end themselves.
#[async_trait]
pub trait OpenTransaction: InTransaction {
    /// Commits it.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Rolls it back.
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// A typed job enqueued in a transaction.
#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    order: String,
}

#[async_trait]
impl typed::Job for Receipt {
    const TYPE: &'static str = "conformance.receipt";
    type Checkpoint = ();
    type State = ();

    async fn run(self, _: &(), _: Context<Self>) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn request(key: &str) -> AcquireRequest {
    AcquireRequest::new(key, TEST_TYPE, serde_json::json!({ "key": key }))
}

/// How long an acquire that must wait for an open transaction is given to (wrongly) finish.
const BLOCKED_FOR: Duration = Duration::from_millis(300);

/// Created in a transaction: invisible outside it until the commit, then a pending job with
/// its payload.
pub async fn acquire_in_a_transaction_exists_once_it_commits(
    store: Arc<dyn JobStore>,
    transactions: Arc<dyn Transactions>,
) {
    let fx = Fixture::new(store);
    let mut transaction = transactions.begin().await;
    let Acquire::Created(job) = fx
        .lock
        .acquire_in(&mut *transaction, request("tx-commit"))
        .await
        .unwrap()
    else {
        panic!("a free key is created");
    };
    assert!(
        matches!(fx.store.get(job.id).await, Err(StoreError::NotFound(_))),
        "an uncommitted job is not seen outside its transaction"
    );
    transaction.commit().await.unwrap();
    let stored = fx.get(&job).await;
    assert_eq!(stored.status, JobStatus::Pending);
    assert_eq!(stored.payload, serde_json::json!({ "key": "tx-commit" }));
    assert_eq!(stored.created_at, fx.now());
    assert_eq!(fx.claim_one().await.id, job.id, "a worker claims it");
}

/// Rolled back: no job, and the key is free again.
pub async fn acquire_in_a_transaction_rolled_back_leaves_nothing(
    store: Arc<dyn JobStore>,
    transactions: Arc<dyn Transactions>,
) {
    let fx = Fixture::new(store);
    let mut transaction = transactions.begin().await;
    let Acquire::Created(job) = fx
        .lock
        .acquire_in(&mut *transaction, request("tx-rollback"))
        .await
        .unwrap()
    else {
        panic!("a free key is created");
    };
    transaction.rollback().await.unwrap();
    assert!(matches!(
        fx.store.get(job.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(fx.claim(10).await.is_empty());
    let again = fx.create("tx-rollback").await;
    assert_ne!(again.id, job.id);
}

/// `Busy` in a transaction with a committed active job, and with one the same transaction
/// created; typed jobs too.
pub async fn acquire_in_a_transaction_answers_busy_as_outside_it(
    store: Arc<dyn JobStore>,
    transactions: Arc<dyn Transactions>,
) {
    let fx = Fixture::new(store);
    let outside = fx.create("tx-busy").await;
    let mut transaction = transactions.begin().await;
    match fx
        .lock
        .acquire_in(&mut *transaction, request("tx-busy"))
        .await
        .unwrap()
    {
        Acquire::Busy(active) => assert_eq!(active.id, outside.id),
        other => panic!("expected Busy with the committed job, got {other:?}"),
    }
    let receipt = Receipt {
        order: "tx-own".to_owned(),
    };
    let Acquire::Created(own) = fx
        .lock
        .enqueue_in(&mut *transaction, "tx-own", &receipt)
        .await
        .unwrap()
    else {
        panic!("a free key is created");
    };
    match fx
        .lock
        .enqueue_in(&mut *transaction, "tx-own", &receipt)
        .await
        .unwrap()
    {
        Acquire::Busy(active) => assert_eq!(active.id, own.id),
        other => panic!("expected Busy with the transaction's own job, got {other:?}"),
    }
    transaction.commit().await.unwrap();
    let stored = fx.get(&own).await;
    assert_eq!(stored.job_type, <Receipt as typed::Job>::TYPE);
    assert_eq!(stored.payload, serde_json::to_value(&receipt).unwrap());
}

/// A plain acquire of a key that an open transaction created waits for it: `Busy` with the
/// transaction's job after the commit, `Created` after a rollback. Never two active jobs.
pub async fn acquire_in_a_transaction_races_a_plain_acquire_to_one_job(
    store: Arc<dyn JobStore>,
    transactions: Arc<dyn Transactions>,
) {
    let fx = Arc::new(Fixture::new(store));
    for commit in [true, false] {
        let key = if commit {
            "tx-race-commit"
        } else {
            "tx-race-rollback"
        };
        let mut transaction = transactions.begin().await;
        let Acquire::Created(job) = fx
            .lock
            .acquire_in(&mut *transaction, request(key))
            .await
            .unwrap()
        else {
            panic!("a free key is created");
        };
        let plain = tokio::spawn({
            let fx = fx.clone();
            async move {
                let request = request(key);
                fx.lock
                    .acquire(&request.resource_key, &request.job_type, request.payload)
                    .await
            }
        });
        tokio::time::sleep(BLOCKED_FOR).await;
        assert!(
            !plain.is_finished(),
            "a plain acquire of {key} answered while the transaction that created its job was open"
        );
        if commit {
            transaction.commit().await.unwrap();
        } else {
            transaction.rollback().await.unwrap();
        }
        let answer = plain.await.unwrap().unwrap();
        match (commit, answer) {
            (true, Acquire::Busy(active)) => assert_eq!(active.id, job.id),
            (false, Acquire::Created(created)) => assert_ne!(created.id, job.id),
            (commit, other) => panic!("commit {commit}: unexpected {other:?}"),
        }
        let active: Vec<_> = fx
            .store
            .list(&crate::JobQuery {
                resource_key: Some(key.to_owned()),
                statuses: JobStatus::ACTIVE.to_vec(),
                limit: 10,
                ..crate::JobQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(active.len(), 1, "{active:?}");
    }
}
