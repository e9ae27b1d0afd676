//! The event store on a file: reopening, appends (grouped, conditional, meeting a damaged
//! index), and damaged event rows read back as typed errors.

mod common;

use common::{event, sqlite_error, tag};
use krescent_core::{AppendCondition, EventQuery, EventStore, QueryItem};
use krescent_sqlite::{SqliteError, SqliteEventStore};

#[test]
fn store_is_send_sync_clone_debug() {
    fn assert<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    assert::<SqliteEventStore>();
    assert::<SqliteError>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_file_keeps_events_and_positions_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let first = {
        let store = SqliteEventStore::open(&path).await.unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        store
            .append(
                vec![
                    event("t.a", &["k:1"], r#"{"n":1}"#),
                    event("t.b", &["k:1", "k:2"], r#"{"n":2}"#),
                    event("t.a", &[], r#"{"n":3}"#),
                ],
                None,
            )
            .await
            .unwrap()
    };
    // Every handle is gone; open the file again.
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(store.head().await.unwrap(), 3);
    assert_eq!(store.read(&EventQuery::match_all()).await.unwrap(), first);
    let tagged = EventQuery::item(QueryItem::types(["t.b"]).and_tag(tag("k:2")));
    assert_eq!(store.read(&tagged).await.unwrap(), vec![first[1].clone()]);

    let more = store
        .append(vec![event("t.c", &["k:2"], "{}")], None)
        .await
        .unwrap();
    assert_eq!(more[0].position, 4);
    // A condition sees the events of the earlier session.
    let conflict = store
        .append(
            vec![event("t.c", &[], "{}")],
            Some(AppendCondition::none_match(EventQuery::item(
                QueryItem::tagged([tag("k:1")]),
            ))),
        )
        .await
        .unwrap_err();
    assert_eq!(conflict.conflict_position(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_meeting_a_damaged_index_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .append(vec![event("t.a", &["k:1"], "{}")], None)
        .await
        .unwrap();
    // A tag row for position 3, which no event has yet: the next append's tag insert conflicts.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "INSERT INTO event_tags (seg, tag, type, position)
             SELECT 0, 'k:1', id, 3 FROM event_types WHERE name = 't.a'",
        )
        .unwrap();
    let batch = vec![event("t.b", &["k:2"], "{}"), event("t.a", &["k:1"], "{}")];
    let err = store.append(batch.clone(), None).await.unwrap_err();
    assert!(
        matches!(sqlite_error(&err), SqliteError::CorruptRow { .. }),
        "{err:?}"
    );
    // Nothing of the batch is stored, not even its first event or its new type.
    assert_eq!(store.head().await.unwrap(), 1);
    assert_eq!(store.read(&EventQuery::match_all()).await.unwrap().len(), 1);
    assert!(
        store
            .read(&EventQuery::item(QueryItem::types(["t.b"])))
            .await
            .unwrap()
            .is_empty()
    );
    // Repaired, the store appends again.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM event_tags WHERE position = 3", [])
        .unwrap();
    let recorded = store.append(batch, None).await.unwrap();
    assert_eq!(recorded[0].position, 2);
    assert_eq!(store.head().await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conditional_appends_admit_exactly_one() {
    // Many writers race to claim the same name; the grouped commit must let exactly one win.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("race.db"))
        .await
        .unwrap();
    let claim = || {
        AppendCondition::none_match(EventQuery::item(
            QueryItem::types(["name.claimed"]).and_tag(tag("name:alice")),
        ))
    };
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            let condition = claim();
            tokio::spawn(async move {
                store
                    .append(
                        vec![event(
                            "name.claimed",
                            &["name:alice"],
                            &format!(r#"{{"by":{i}}}"#),
                        )],
                        Some(condition),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r[0].position, 1);
                won += 1;
            }
            Err(e) => assert_eq!(e.conflict_position(), Some(1), "{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.head().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .append((0..8).map(|_| event("t.a", &["k:1"], "{}")).collect(), None)
        .await
        .unwrap();
    // A record is position (8 bytes) ‖ type id (8) ‖ id (16) ‖ time (8) ‖ tags length (4) ‖
    // tags ‖ payload;
    // SQL's `||`
    // makes text, so the changed records are cast back to blobs.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (position, update) in [
        (1, "SET record = x'0102'"),
        (2, "SET record = 42"),
        // The tags length says more bytes than the record has.
        (
            3,
            "SET record = CAST(substr(record, 1, 40) || x'ffffff00' || substr(record, 45) AS BLOB)",
        ),
        // The tags text has a wrong length prefix.
        (
            4,
            "SET record = CAST(substr(record, 1, 44) || x'39' || substr(record, 46) AS BLOB)",
        ),
        // A time beyond what a timestamp can hold.
        (
            5,
            "SET record = CAST(substr(record, 1, 32) || x'ffffffffffffff7f' || substr(record, 41) AS BLOB)",
        ),
        // A type id that `event_types` does not have.
        (
            6,
            "SET record = CAST(substr(record, 1, 8) || x'6300000000000000' || substr(record, 17) AS BLOB)",
        ),
        // A record whose position is not its row's.
        (
            7,
            "SET record = CAST(x'6300000000000000' || substr(record, 9) AS BLOB)",
        ),
    ] {
        let changed = conn
            .execute(
                &format!("UPDATE events {update} WHERE position = ?1"),
                [position],
            )
            .unwrap();
        assert_eq!(changed, 1, "{update}");
    }
    for (position, what) in [
        (1, "shorter than its 44-byte header"),
        (2, "record is not a blob"),
        (3, "run past its end"),
        (4, "tags"),
        (5, "timestamp out of range"),
        (6, "type id 99"),
        (7, "record says position 99"),
    ] {
        let query = EventQuery::match_all().after(position - 1).until(position);
        let err = store.read(&query).await.unwrap_err();
        match sqlite_error(&err) {
            SqliteError::CorruptRow {
                position: p,
                what: w,
            } => {
                assert_eq!(*p, Some(position));
                assert!(w.contains(what), "{w}");
            }
            other => panic!("expected CorruptRow, got {other:?}"),
        }
        assert!(err.to_string().contains("sqlite"), "{err}");
    }
    // The intact event still reads.
    let intact = EventQuery::match_all().after(7);
    assert_eq!(store.read(&intact).await.unwrap().len(), 1);
}

/// An append that finds the file locked by another connection past the busy timeout fails
/// with a transient error, stores nothing, and succeeds once the lock is gone; invalid input
/// and a conflict are permanent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_file_is_a_transient_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = SqliteEventStore::open(&path).await.unwrap();
    store
        .append(vec![event("t.a", &["k:v"], "{}")], None)
        .await
        .unwrap();

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let err = store
        .append(vec![event("t.a", &["k:v"], "{}")], None)
        .await
        .expect_err("the file is locked");
    assert!(err.is_transient(), "a busy file is transient: {err}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(
        store.head().await.unwrap(),
        1,
        "the failed append stored nothing"
    );
    store
        .append(vec![event("t.a", &["k:v"], "{}")], None)
        .await
        .expect("the lock is gone");

    let query = EventQuery::item(QueryItem::tagged([tag("k:v")]));
    let conflict = store
        .append(
            vec![event("t.a", &["k:v"], "{}")],
            Some(AppendCondition::none_match(query)),
        )
        .await
        .expect_err("matching events exist");
    assert!(!conflict.is_transient());
    let gone = SqliteEventStore::open(dir.path().join("missing-dir").join("x.db"))
        .await
        .expect_err("no such directory");
    assert!(!gone.is_transient(), "{gone}");
}
