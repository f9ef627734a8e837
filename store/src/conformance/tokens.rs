//! Conformance cases of API tokens.

use super::*;

pub async fn case_tokens_are_stored_revoked_and_touched(store: &dyn Store) {
    let record = TokenRecord {
        id: "abc123".to_owned(),
        hash: "00ff".to_owned(),
        role: "client".to_owned(),
        tenant: "team-a".to_owned(),
        name: "ci".to_owned(),
        created_ms: NOW,
        expires_ms: NOW + 1000,
        labels: BTreeMap::from([("zone".to_owned(), "eu".to_owned())]),
        kinds: vec!["echo".to_owned()],
        revoked_ms: None,
        last_used_ms: None,
    };
    assert_eq!(store.token("abc123").await.expect("token"), None);
    store.create_token(&record).await.expect("create");
    assert!(matches!(
        store.create_token(&record).await,
        Err(StoreError::TokenExists(taken)) if taken == "abc123"
    ));
    assert_eq!(
        store.token("abc123").await.expect("token"),
        Some(record.clone())
    );
    let revocations = store.token_revocations().await.expect("revocations");
    store.touch_token("abc123", NOW + 5).await.expect("touch");
    assert!(
        store
            .revoke_token("abc123", NOW + 10)
            .await
            .expect("revoke")
    );
    assert!(
        store
            .revoke_token("abc123", NOW + 20)
            .await
            .expect("revoke")
    );
    assert!(!store.revoke_token("nope", NOW + 20).await.expect("revoke"));
    assert_eq!(
        store.token_revocations().await.expect("revocations"),
        revocations + 2
    );
    let read = store.token("abc123").await.expect("token").expect("exists");
    assert_eq!(read.revoked_ms, Some(NOW + 10));
    assert_eq!(read.last_used_ms, Some(NOW + 5));
    let mut other = record.clone();
    other.id = "0first".to_owned();
    store.create_token(&other).await.expect("create");
    let ids: Vec<String> = store
        .tokens()
        .await
        .expect("tokens")
        .into_iter()
        .map(|token| token.id)
        .collect();
    assert_eq!(ids, vec!["0first", "abc123"]);
}
