//! Request keys: claim, answer, release, take-over, mismatch, races and deletion.

use super::*;
use crate::{KeptAnswer, KeyClaim, KeyedRequest};

fn request<'a>(key: &'a str, fingerprint: &'a str, claim: &'a str) -> KeyedRequest<'a> {
    KeyedRequest {
        key,
        request: "POST /v1/books/b/pages?ocr=true",
        fingerprint,
        claim,
    }
}

fn answer(body: &str) -> KeptAnswer {
    KeptAnswer {
        status: 202,
        content_type: "application/json".to_owned(),
        body: body.as_bytes().to_vec(),
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

/// Long ago: nothing is stale.
fn never() -> DateTime<Utc> {
    at(-1_000_000)
}

/// A new key is `Claimed`; the same request again while it runs is `Running`.
pub async fn a_new_key_is_claimed_and_a_repeat_while_it_runs_is_told_so(store: Arc<dyn JobStore>) {
    let first = request("k1", "digest", "claim-1");
    assert_eq!(
        store.claim_key(&first, at(0), never()).await.unwrap(),
        KeyClaim::Claimed
    );
    let repeat = request("k1", "digest", "claim-2");
    assert_eq!(
        store.claim_key(&repeat, at(1), never()).await.unwrap(),
        KeyClaim::Running
    );
    // Another key is its own.
    let other = request("k2", "digest", "claim-3");
    assert_eq!(
        store.claim_key(&other, at(1), never()).await.unwrap(),
        KeyClaim::Claimed
    );
}

/// An answered key gives its answer, byte for byte, to every repeat, stale or not.
pub async fn an_answered_key_gives_its_answer_to_a_repeat_of_the_same_request(
    store: Arc<dyn JobStore>,
) {
    let first = request("k", "digest", "claim-1");
    store.claim_key(&first, at(0), never()).await.unwrap();
    let kept = answer("{\"upload\": 1}");
    assert!(store.answer_key("k", "claim-1", &kept).await.unwrap());
    for (attempt, claim) in ["claim-2", "claim-3"].into_iter().enumerate() {
        let repeat = request("k", "digest", claim);
        assert_eq!(
            store
                .claim_key(&repeat, at(attempt as i64 + 1), at(100))
                .await
                .unwrap(),
            KeyClaim::Answered(kept.clone()),
            "an answered key is never stale"
        );
    }
    // A binary body comes back byte for byte.
    let bytes = request("bytes", "digest", "claim-4");
    store.claim_key(&bytes, at(0), never()).await.unwrap();
    let binary = KeptAnswer {
        status: 201,
        content_type: "application/octet-stream".to_owned(),
        body: vec![0, 255, 1, 254],
    };
    assert!(store.answer_key("bytes", "claim-4", &binary).await.unwrap());
    assert_eq!(
        store
            .claim_key(&request("bytes", "digest", "claim-5"), at(1), never())
            .await
            .unwrap(),
        KeyClaim::Answered(binary)
    );
}

/// Another fingerprint or request under a used key is a `Mismatch`, answered or not.
pub async fn a_used_key_with_another_body_or_path_is_a_mismatch(store: Arc<dyn JobStore>) {
    store
        .claim_key(&request("k", "digest", "claim-1"), at(0), never())
        .await
        .unwrap();
    let other_body = request("k", "other digest", "claim-2");
    assert_eq!(
        store.claim_key(&other_body, at(1), never()).await.unwrap(),
        KeyClaim::Mismatch
    );
    let other_path = KeyedRequest {
        request: "POST /v1/books",
        ..request("k", "digest", "claim-3")
    };
    assert_eq!(
        store.claim_key(&other_path, at(1), never()).await.unwrap(),
        KeyClaim::Mismatch
    );
    // Still a mismatch once answered, and a stale claim is not taken over by another request.
    assert!(
        store
            .answer_key("k", "claim-1", &answer("{}"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.claim_key(&other_body, at(2), at(100)).await.unwrap(),
        KeyClaim::Mismatch
    );
}

/// A released key is free again; only its own claim answers or releases it, and an answer
/// is never released.
pub async fn a_released_key_runs_again_and_only_its_claim_releases_or_answers_it(
    store: Arc<dyn JobStore>,
) {
    store
        .claim_key(&request("k", "digest", "claim-1"), at(0), never())
        .await
        .unwrap();
    // Another claim's release and answer do nothing.
    store.release_key("k", "claim-2").await.unwrap();
    assert!(
        !store
            .answer_key("k", "claim-2", &answer("{}"))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .claim_key(&request("k", "digest", "claim-3"), at(1), never())
            .await
            .unwrap(),
        KeyClaim::Running
    );
    store.release_key("k", "claim-1").await.unwrap();
    assert_eq!(
        store
            .claim_key(&request("k", "other digest", "claim-4"), at(2), never())
            .await
            .unwrap(),
        KeyClaim::Claimed,
        "a released key is free for any request"
    );
    // An answered key is not released.
    assert!(
        store
            .answer_key("k", "claim-4", &answer("{}"))
            .await
            .unwrap()
    );
    store.release_key("k", "claim-4").await.unwrap();
    assert_eq!(
        store
            .claim_key(&request("k", "other digest", "claim-5"), at(3), never())
            .await
            .unwrap(),
        KeyClaim::Answered(answer("{}"))
    );
}

/// A claim older than `stale_before` is taken over by the same request, and the old claim
/// can no longer answer or release the key.
pub async fn a_stale_claim_is_taken_over_and_can_no_longer_answer(store: Arc<dyn JobStore>) {
    store
        .claim_key(&request("k", "digest", "old"), at(0), never())
        .await
        .unwrap();
    // Claimed at 0: not stale before 0, stale before 10.
    assert_eq!(
        store
            .claim_key(&request("k", "digest", "early"), at(5), at(0))
            .await
            .unwrap(),
        KeyClaim::Running
    );
    assert_eq!(
        store
            .claim_key(&request("k", "digest", "new"), at(20), at(10))
            .await
            .unwrap(),
        KeyClaim::Claimed
    );
    assert!(!store.answer_key("k", "old", &answer("old")).await.unwrap());
    store.release_key("k", "old").await.unwrap();
    // Claimed again at 20: running until then.
    assert_eq!(
        store
            .claim_key(&request("k", "digest", "later"), at(21), at(10))
            .await
            .unwrap(),
        KeyClaim::Running
    );
    assert!(store.answer_key("k", "new", &answer("new")).await.unwrap());
    assert_eq!(
        store
            .claim_key(&request("k", "digest", "last"), at(22), at(21))
            .await
            .unwrap(),
        KeyClaim::Answered(answer("new"))
    );
}

/// Of 16 concurrent claims of a new key, exactly one is `Claimed`.
pub async fn concurrent_claims_of_one_key_give_it_to_exactly_one(store: Arc<dyn JobStore>) {
    let claims: Vec<String> = (0..16).map(|n| format!("claim-{n}")).collect();
    let outcomes = futures::future::join_all(claims.iter().map(|claim| {
        let store = store.clone();
        async move {
            store
                .claim_key(&request("race", "digest", claim), at(0), never())
                .await
                .unwrap()
        }
    }))
    .await;
    let claimed = outcomes
        .iter()
        .filter(|outcome| **outcome == KeyClaim::Claimed)
        .count();
    assert_eq!(claimed, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, KeyClaim::Claimed | KeyClaim::Running)),
        "{outcomes:?}"
    );
}

/// `delete_keys` deletes keys claimed before the time, answered or not, and keeps the rest.
pub async fn keys_claimed_before_a_time_are_deleted_and_later_ones_kept(store: Arc<dyn JobStore>) {
    for (key, second) in [("old-1", 0), ("old-2", 10), ("new", 100)] {
        let claim = format!("claim-{key}");
        store
            .claim_key(&request(key, "digest", &claim), at(second), never())
            .await
            .unwrap();
    }
    assert!(
        store
            .answer_key("old-1", "claim-old-1", &answer("{}"))
            .await
            .unwrap()
    );
    assert_eq!(store.delete_keys(at(50)).await.unwrap(), 2);
    assert_eq!(store.delete_keys(at(50)).await.unwrap(), 0);
    assert_eq!(
        store
            .claim_key(&request("old-1", "other", "again"), at(200), never())
            .await
            .unwrap(),
        KeyClaim::Claimed,
        "a deleted key is new again"
    );
    assert_eq!(
        store
            .claim_key(&request("new", "digest", "repeat"), at(200), never())
            .await
            .unwrap(),
        KeyClaim::Running
    );
}
