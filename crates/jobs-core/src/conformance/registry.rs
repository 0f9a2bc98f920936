//! The worker registry and the job signal.

use std::sync::Arc;
use std::time::Duration;

use super::Fixture;
use crate::{JobStore, WorkerInfo};

fn worker(id: &str, at: chrono::DateTime<chrono::Utc>) -> WorkerInfo {
    WorkerInfo {
        id: id.to_owned(),
        host: "host-1".to_owned(),
        job_types: vec!["ocr".to_owned(), "finalize".to_owned()],
        started_at: at,
        last_seen: at,
    }
}

/// Workers register, stay alive by touching, and leave; listing sees only recent ones.
pub async fn workers_register_touch_and_leave(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let t0 = fx.now();
    fx.store.register_worker(&worker("a", t0)).await.unwrap();
    fx.advance(Duration::from_secs(1));
    fx.store
        .register_worker(&worker("b", fx.now()))
        .await
        .unwrap();
    let listed = fx.store.list_workers(t0).await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    assert_eq!(listed[1], worker("a", t0));

    fx.advance(Duration::from_secs(4));
    assert!(fx.store.touch_worker("a", fx.now()).await.unwrap());
    assert!(!fx.store.touch_worker("nobody", fx.now()).await.unwrap());
    let recent = fx
        .store
        .list_workers(fx.now() - chrono::Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].id, "a");
    assert_eq!(recent[0].last_seen, fx.now());
    assert_eq!(recent[0].started_at, t0);

    // A restart under the same id refreshes the row.
    fx.store
        .register_worker(&worker("a", fx.now()))
        .await
        .unwrap();
    assert_eq!(
        fx.store.list_workers(t0).await.unwrap()[0].started_at,
        fx.now()
    );
    fx.store.remove_worker("a").await.unwrap();
    let left = fx.store.list_workers(t0).await.unwrap();
    assert_eq!(
        left.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
}

/// Whether `signal` fires within 5 s of `action` (listening from before it starts).
pub async fn signalled(
    signal: &tokio::sync::Notify,
    action: impl std::future::Future<Output = ()>,
) -> bool {
    let notified = signal.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    action.await;
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .is_ok()
}

/// A store that offers a job signal fires it for every insert and every requeue.
pub async fn job_signal_fires_on_insert_and_requeue(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let Some(signal) = fx.store.job_signal() else {
        return; // the store only supports polling; nothing to check
    };
    // The first signal may come from the listener connecting; wait until inserts are heard.
    let mut heard = false;
    for attempt in 0..10 {
        if signalled(&signal, async {
            fx.create(&format!("warmup-{attempt}")).await;
        })
        .await
        {
            heard = true;
            break;
        }
    }
    assert!(heard, "no signal after inserting jobs");
    for key in ["a", "b", "c"] {
        assert!(
            signalled(&signal, async {
                fx.create(key).await;
            })
            .await,
            "insert of {key}"
        );
    }
    // Only "d" may be claimable for the requeue below.
    let every_job = crate::JobQuery {
        limit: 100,
        ..crate::JobQuery::default()
    };
    for job in fx.store.list(&every_job).await.unwrap() {
        fx.lock.cancel(job.id).await.unwrap();
    }
    let job = fx.running("d").await;
    assert!(
        signalled(&signal, async {
            fx.requeue(&job, Duration::ZERO).await;
        })
        .await,
        "requeue"
    );
}
