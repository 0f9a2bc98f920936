//! Listing: every resource's jobs newest first (by id), filters by status and type, keyset
//! pages with `before`, and the limit.

use std::sync::Arc;

use super::{Fixture, WORKER};
use crate::{ClaimParams, FinishOutcome, Job, JobError, JobId, JobQuery, JobStatus, JobStore};

/// The job types of [`mixed_jobs`], in turn.
const TYPES: [&str; 3] = ["ocr", "guidelines", "finalize"];

/// The statuses of [`mixed_jobs`], in turn: completed most often, as in a real table, with
/// every other status in between.
const PATTERN: [JobStatus; 8] = [
    JobStatus::Completed,
    JobStatus::Failed,
    JobStatus::Pending,
    JobStatus::Completed,
    JobStatus::Cancelled,
    JobStatus::Running,
    JobStatus::Completed,
    JobStatus::Completed,
];

/// Creates a job of `job_type` for `key` and brings it to `status`.
async fn job_in(fx: &Fixture, key: &str, job_type: &str, status: JobStatus) -> Job {
    if status == JobStatus::Pending {
        // Due tomorrow, so the claims that bring later jobs of its type to their status pass
        // it by. Its `created_at` is then later than theirs: listings go by id regardless.
        let now = fx.now();
        fx.clock.set(now + chrono::Duration::days(1));
        let job = fx.create_typed(key, job_type).await;
        fx.clock.set(now);
        return job;
    }
    let created = fx.create_typed(key, job_type).await;
    if status == JobStatus::Cancelled {
        return fx.lock.cancel(created.id).await.unwrap();
    }
    let claimed = fx
        .store
        .claim(&ClaimParams {
            worker_id: WORKER.to_owned(),
            job_types: vec![job_type.to_owned()],
            limit: 1,
            now: fx.now(),
        })
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|job| job.id).collect::<Vec<_>>(),
        [created.id]
    );
    let outcome = match status {
        JobStatus::Running => return claimed[0].clone(),
        JobStatus::Completed => FinishOutcome::Completed,
        _ => FinishOutcome::Failed(JobError::new("broken", "it broke", false)),
    };
    fx.finish(&claimed[0], outcome).await.unwrap()
}

/// `n` jobs over several resources, types and every status, in creation (and id) order.
/// Ended jobs share three resources (`book-0` to `book-2`); each active job has a resource
/// of its own, since a resource holds one active job per type.
async fn mixed_jobs(fx: &Fixture, n: usize) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        let status = PATTERN[i % PATTERN.len()];
        let key = if status.is_active() {
            format!("active-{i}")
        } else {
            format!("book-{}", i % 3)
        };
        let job = job_in(fx, &key, TYPES[i % TYPES.len()], status).await;
        assert_eq!(job.status, status);
        jobs.push(job);
    }
    let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids grow with creation: {ids:?}"
    );
    jobs
}

/// What `query` should list from `jobs` (in creation order): the matching ones, newest
/// first, at most `query.limit`.
fn expected(jobs: &[Job], query: &JobQuery) -> Vec<JobId> {
    jobs.iter()
        .rev()
        .filter(|job| {
            query
                .resource_key
                .as_ref()
                .is_none_or(|key| *key == job.resource_key)
                && query
                    .job_type
                    .as_ref()
                    .is_none_or(|job_type| *job_type == job.job_type)
                && (query.statuses.is_empty() || query.statuses.contains(&job.status))
                && query.before.is_none_or(|before| job.id < before)
        })
        .map(|job| job.id)
        .take(usize::try_from(query.limit).unwrap())
        .collect()
}

async fn listed(store: &Arc<dyn JobStore>, query: &JobQuery) -> Vec<JobId> {
    store
        .list(query)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect()
}

fn statuses(statuses: &[JobStatus]) -> JobQuery {
    JobQuery {
        statuses: statuses.to_vec(),
        limit: 1000,
        ..JobQuery::default()
    }
}

/// Without a resource, the listing holds every resource's jobs, newest first by id (not by
/// `created_at`), each as stored.
pub async fn list_of_every_resource_is_newest_first(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let jobs = mixed_jobs(&fx, 24).await;
    let all = JobQuery {
        limit: 1000,
        ..JobQuery::default()
    };
    let listed_jobs = fx.store.list(&all).await.unwrap();
    let newest_first: Vec<Job> = jobs.iter().rev().cloned().collect();
    assert_eq!(listed_jobs, newest_first);
    // Every status at once is the same as no status filter.
    assert_eq!(
        listed(&fx.store, &statuses(&JobStatus::ALL)).await,
        expected(&jobs, &all)
    );
}

/// A status filter keeps the jobs in that status, or in any of several, newest first; it
/// combines with the type and the resource filters.
pub async fn list_filters_by_one_status_several_statuses_and_type(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let jobs = mixed_jobs(&fx, 24).await;
    let mut queries = Vec::new();
    for status in JobStatus::ALL {
        queries.push(statuses(&[status]));
    }
    for several in [
        &[JobStatus::Failed, JobStatus::Cancelled][..],
        &[JobStatus::Completed, JobStatus::Running],
        &[JobStatus::Pending, JobStatus::Failed, JobStatus::Completed],
        &[JobStatus::Running, JobStatus::Pending],
        &[JobStatus::Cancelled, JobStatus::Cancelled],
    ] {
        queries.push(statuses(several));
    }
    for job_type in TYPES {
        queries.push(JobQuery {
            job_type: Some(job_type.to_owned()),
            ..statuses(&[])
        });
        queries.push(JobQuery {
            job_type: Some(job_type.to_owned()),
            ..statuses(&[JobStatus::Completed, JobStatus::Failed, JobStatus::Running])
        });
    }
    for key in ["book-0", "book-1", "active-2"] {
        queries.push(JobQuery {
            resource_key: Some(key.to_owned()),
            ..statuses(&[JobStatus::Failed, JobStatus::Completed, JobStatus::Pending])
        });
        queries.push(JobQuery {
            resource_key: Some(key.to_owned()),
            job_type: Some("ocr".to_owned()),
            ..statuses(&[JobStatus::Completed])
        });
    }
    for query in &queries {
        let want = expected(&jobs, query);
        assert_eq!(listed(&fx.store, query).await, want, "{query:?}");
    }
    for status in JobStatus::ALL {
        assert!(
            !expected(&jobs, &statuses(&[status])).is_empty(),
            "the data holds {status} jobs"
        );
    }
    assert!(
        listed(
            &fx.store,
            &JobQuery {
                job_type: Some("no-such-type".to_owned()),
                ..statuses(&[])
            }
        )
        .await
        .is_empty()
    );
}

/// Pages chained with `before` (the last id of the previous page) return every job exactly
/// once, newest first, with no overlap, for every kind of filter; `before` need not be an
/// id that exists.
pub async fn list_pages_with_before_return_every_job_exactly_once(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let jobs = mixed_jobs(&fx, 24).await;
    let queries = [
        statuses(&[]),
        statuses(&[JobStatus::Completed]),
        statuses(&[JobStatus::Completed, JobStatus::Failed, JobStatus::Running]),
        statuses(&[JobStatus::Pending, JobStatus::Cancelled]),
        JobQuery {
            job_type: Some("ocr".to_owned()),
            ..statuses(&[])
        },
        JobQuery {
            resource_key: Some("book-0".to_owned()),
            ..statuses(&[])
        },
        JobQuery {
            resource_key: Some("book-1".to_owned()),
            ..statuses(&[JobStatus::Completed, JobStatus::Failed])
        },
    ];
    for whole in &queries {
        let all = listed(&fx.store, whole).await;
        assert_eq!(all, expected(&jobs, whole), "{whole:?}");
        assert!(all.len() >= 2, "enough jobs to page through: {whole:?}");
        for page_size in [1, 2, 5] {
            let mut paged: Vec<JobId> = Vec::new();
            let mut before = None;
            loop {
                let query = JobQuery {
                    before,
                    limit: page_size,
                    ..whole.clone()
                };
                let page = listed(&fx.store, &query).await;
                assert!(page.len() <= page_size as usize, "{query:?}: {page:?}");
                if let (Some(last), Some(first)) = (paged.last(), page.first()) {
                    assert!(first < last, "pages overlap or go back: {query:?}");
                }
                paged.extend(&page);
                match page.last() {
                    Some(last) if page.len() == page_size as usize => before = Some(*last),
                    _ => break,
                }
            }
            assert_eq!(paged, all, "{whole:?} in pages of {page_size}");
        }
    }
    let unfiltered = statuses(&[]);
    let everything = listed(&fx.store, &unfiltered).await;
    // A bound newer than every job lists them all; one at the oldest job lists nothing.
    let newer = JobQuery {
        before: Some(JobId::new()),
        ..unfiltered.clone()
    };
    assert_eq!(listed(&fx.store, &newer).await, everything);
    let oldest = JobQuery {
        before: Some(jobs[0].id),
        ..unfiltered.clone()
    };
    assert!(listed(&fx.store, &oldest).await.is_empty());
    // A bound between two jobs lists those below it.
    let middle = JobQuery {
        before: Some(jobs[10].id),
        ..unfiltered
    };
    assert_eq!(listed(&fx.store, &middle).await, expected(&jobs, &middle));
    assert_eq!(listed(&fx.store, &middle).await.len(), 10);
}

/// A listing returns at most `limit` jobs: the newest that match, whichever indexes the
/// store reads them from.
pub async fn list_returns_at_most_limit_jobs_the_newest_ones(store: Arc<dyn JobStore>) {
    let fx = Fixture::new(store);
    let jobs = mixed_jobs(&fx, 24).await;
    for limit in [1, 2, 7, 24, 25] {
        for filter in [
            statuses(&[]),
            statuses(&[JobStatus::Completed]),
            statuses(&[
                JobStatus::Pending,
                JobStatus::Running,
                JobStatus::Failed,
                JobStatus::Cancelled,
            ]),
            statuses(&JobStatus::ALL),
            JobQuery {
                resource_key: Some("book-2".to_owned()),
                ..statuses(&[])
            },
        ] {
            let query = JobQuery { limit, ..filter };
            let page = listed(&fx.store, &query).await;
            assert_eq!(page, expected(&jobs, &query), "{query:?}");
            assert!(page.len() <= limit as usize);
        }
    }
    let one = JobQuery {
        limit: 1,
        ..JobQuery::default()
    };
    assert_eq!(listed(&fx.store, &one).await, [jobs[23].id]);
}
