//! Cases on subscriptions: history then live events, exactly once and in order, under
//! concurrent appends, filtered by their query, ending once cancelled.

use std::sync::Arc;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::event::RecordedEvent;
use crate::query::{EventQuery, QueryItem};
use crate::store::{EventStore, Subscription};
use crate::testing::{ContractFailure, EventStoreFactory};

use super::support::{Ctx, limit, payload_u64, positions_of, range, tag};

/// A subscription from the start delivers the stored events, then the ones appended while it
/// runs, exactly once and in order, and ends once cancelled.
pub async fn subscribe_from_start_while_appending<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("subscribe_from_start_while_appending");
    let store = factory.create().await;
    let mut expected = ctx
        .append(
            &store,
            vec![
                ctx.event("contract.n", &[], r#"{"n":1}"#)?,
                ctx.event("contract.n", &[], r#"{"n":2}"#)?,
            ],
            None,
            "append of events 1 and 2",
        )
        .await?;
    let cancel = CancellationToken::new();
    let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
    let mut got = ctx.collect(&mut sub, 2, "history (events 1 and 2)").await?;
    ctx.eq(
        positions_of(&got),
        vec![1, 2],
        "history delivered by the subscription",
    )?;

    for n in [3, 4] {
        let e = ctx.event("contract.n", &[], &format!(r#"{{"n":{n}}}"#))?;
        expected.extend(
            ctx.append(&store, vec![e], None, &format!("append of event {n}"))
                .await?,
        );
    }
    got.extend(ctx.collect(&mut sub, 2, "live events 3 and 4").await?);
    ctx.eq(
        positions_of(&got),
        vec![1, 2, 3, 4],
        "positions delivered by the subscription",
    )?;
    ctx.eq(
        got,
        expected,
        "events delivered compared with the events appended",
    )?;

    // Cancel while a call to `next_batch` is waiting for new events: that call must end.
    let waiting = ctx
        .next_batch_then_cancel(&mut sub, &cancel, "subscription at the head")
        .await?;
    if waiting {
        ctx.expect_end(&mut sub, "subscription cancelled while waiting")
            .await
    } else {
        Ok(())
    }
}

/// A subscription from the head delivers only events appended afterwards; one from the middle
/// delivers the rest of the history first.
pub async fn subscribe_from_head_sees_only_new_events<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("subscribe_from_head_sees_only_new_events");
    let store = factory.create().await;
    let events = (1..=3)
        .map(|n| ctx.event("contract.n", &[], &format!(r#"{{"n":{n}}}"#)))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.append(&store, events, None, "append of 3 events")
        .await?;
    let head = ctx.head(&store).await?;
    ctx.eq(head, 3, "head after 3 events")?;

    let cancel = CancellationToken::new();
    let mut from_head = store.subscribe(EventQuery::match_all(), head, cancel.clone());
    let mut from_one = store.subscribe(EventQuery::match_all(), 1, cancel.clone());
    for n in [4, 5] {
        let e = ctx.event("contract.n", &[], &format!(r#"{{"n":{n}}}"#))?;
        ctx.append(&store, vec![e], None, &format!("append of event {n}"))
            .await?;
    }
    let got = ctx
        .collect(&mut from_head, 2, "subscription after the head (3)")
        .await?;
    ctx.eq(
        positions_of(&got),
        vec![4, 5],
        "positions delivered to a subscription after the head",
    )?;
    let got = ctx
        .collect(&mut from_one, 4, "subscription after position 1")
        .await?;
    ctx.eq(
        positions_of(&got),
        vec![2, 3, 4, 5],
        "positions delivered to a subscription after 1",
    )?;

    cancel.cancel();
    ctx.expect_end(&mut from_head, "subscription after the head")
        .await?;
    ctx.expect_end(&mut from_one, "subscription after position 1")
        .await
}

/// 100 events appended one by one by another task while a subscription runs are all
/// delivered, once each, in order.
pub async fn subscription_sees_burst_of_appends<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    const BURST: u64 = 100;
    let ctx = Ctx("subscription_sees_burst_of_appends");
    let store = Arc::new(factory.create().await);
    let cancel = CancellationToken::new();
    let mut sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());

    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut appended = Vec::new();
            for n in 1..=BURST {
                let e = ctx.event("contract.burst", &[], &format!(r#"{{"n":{n}}}"#))?;
                appended.extend(
                    ctx.append(
                        &*store,
                        vec![e],
                        None,
                        &format!("append of burst event {n}"),
                    )
                    .await?,
                );
            }
            Ok::<_, ContractFailure>(appended)
        })
    };
    let got = ctx
        .collect(&mut sub, BURST as usize, "subscription during the burst")
        .await?;
    let appended = ctx.joined(writer.await, "burst writer")??;

    ctx.eq(
        positions_of(&got),
        range(1..=BURST),
        "positions delivered during the burst",
    )?;
    ctx.eq(
        got,
        appended,
        "events delivered compared with the events appended",
    )?;
    cancel.cancel();
    ctx.expect_end(&mut sub, "subscription").await
}

/// Eight tasks append 50 events each (single events and small batches) at the same time while
/// live subscriptions run: positions are 1..=400 without gaps, every event is delivered
/// exactly once, each batch sits at consecutive positions, each task's events appear in the
/// order it appended them, and a filtered subscription sees exactly its task's events.
pub async fn concurrent_appenders_with_live_subscribers<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("concurrent_appenders_with_live_subscribers");
    let store = Arc::new(factory.create().await);
    let cancel = CancellationToken::new();

    let all_sub = store.subscribe(EventQuery::match_all(), 0, cancel.clone());
    let writer0_sub = store.subscribe(
        EventQuery::item(QueryItem::tagged([tag("writer:0")])),
        0,
        cancel.clone(),
    );
    let subscriber = |mut sub: Subscription, want: u64, what: &'static str| {
        tokio::spawn(async move {
            let got = ctx.collect(&mut sub, want as usize, what).await?;
            Ok::<_, ContractFailure>((got, sub))
        })
    };
    let all_task = subscriber(all_sub, TOTAL, "subscription to everything");
    let writer0_task = subscriber(writer0_sub, PER_WRITER, "subscription to writer 0");

    let writers = spawn_writers(ctx, &store);

    let mut batches = Vec::new();
    for (w, writer) in writers.into_iter().enumerate() {
        batches.push(ctx.joined(writer.await, &format!("writer {w}"))??);
    }
    let (got, mut all_sub) = ctx.joined(all_task.await, "subscriber to everything")??;
    let (got0, mut writer0_sub) = ctx.joined(writer0_task.await, "subscriber to writer 0")??;

    ctx.eq(
        positions_of(&got),
        range(1..=TOTAL),
        "positions delivered to the live subscription (each once, in order, no gaps)",
    )?;
    ctx.eq(
        ctx.head(&*store).await?,
        TOTAL,
        "head after all writers finished",
    )?;
    let read = ctx.read(&*store, &EventQuery::match_all()).await?;
    ctx.eq(
        &read,
        &got,
        "read(match_all) compared with the events delivered live",
    )?;

    expect_writer_batches(ctx, &batches, &got)?;
    let writer0_positions: Vec<u64> = got
        .iter()
        .filter(|e| e.tags.contains(&tag("writer:0")))
        .map(|e| e.position)
        .collect();
    ctx.eq(
        positions_of(&got0),
        writer0_positions,
        "positions delivered to the subscription filtered to writer 0",
    )?;

    cancel.cancel();
    ctx.expect_end(&mut all_sub, "subscription to everything")
        .await?;
    ctx.expect_end(&mut writer0_sub, "subscription to writer 0")
        .await
}

/// Writer tasks of `concurrent_appenders_with_live_subscribers`.
const WRITERS: u64 = 8;
/// Events each writer appends.
const PER_WRITER: u64 = 50;
/// Events all writers append.
const TOTAL: u64 = WRITERS * PER_WRITER;
/// The batch sizes the writers cycle through, each starting at its own offset.
const BATCH_SIZES: [u64; 6] = [1, 2, 1, 3, 1, 4];

/// The batches one writer appended, in the order it appended them.
type WriterBatches = Vec<Vec<RecordedEvent>>;

/// Spawns the writers of `concurrent_appenders_with_live_subscribers`: each waits for the
/// others, then appends its `PER_WRITER` events in batches, tagged with its number.
fn spawn_writers<S: EventStore + 'static>(
    ctx: Ctx,
    store: &Arc<S>,
) -> Vec<JoinHandle<Result<WriterBatches, ContractFailure>>> {
    let start = Arc::new(Barrier::new(WRITERS as usize));
    (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut batches = Vec::new();
                let mut seq = 0;
                let mut round = w as usize;
                while seq < PER_WRITER {
                    let size = BATCH_SIZES[round % BATCH_SIZES.len()].min(PER_WRITER - seq);
                    round += 1;
                    let events = (seq..seq + size)
                        .map(|s| {
                            ctx.event(
                                "contract.concurrent",
                                &[&format!("writer:{w}")],
                                &format!(r#"{{"writer":{w},"seq":{s}}}"#),
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let recorded = ctx
                        .append(&*store, events, None, &format!("append by writer {w}"))
                        .await?;
                    batches.push(recorded);
                    seq += size;
                }
                Ok::<_, ContractFailure>(batches)
            })
        })
        .collect()
}

/// Each writer's batches sit at consecutive positions and were delivered live as appended,
/// and each writer's events appear in the order it appended them.
fn expect_writer_batches(
    ctx: Ctx,
    batches: &[WriterBatches],
    got: &[RecordedEvent],
) -> Result<(), ContractFailure> {
    for (w, writer_batches) in batches.iter().enumerate() {
        for batch in writer_batches {
            let first = batch.first().map_or(0, |e| e.position);
            ctx.eq(
                positions_of(batch),
                (first..first + batch.len() as u64).collect::<Vec<_>>(),
                format!(
                    "positions of a batch of {} appended by writer {w}",
                    batch.len()
                ),
            )?;
            for e in batch {
                let delivered = got.get((e.position - 1) as usize);
                ctx.eq(
                    delivered,
                    Some(e),
                    format!(
                        "event delivered at position {} (appended by writer {w})",
                        e.position
                    ),
                )?;
            }
        }
        let writer_tag = tag(&format!("writer:{w}"));
        let seqs: Vec<Option<u64>> = got
            .iter()
            .filter(|e| e.tags.contains(&writer_tag))
            .map(|e| payload_u64(e, "seq"))
            .collect();
        ctx.eq(
            seqs,
            (0..PER_WRITER).map(Some).collect::<Vec<_>>(),
            format!("sequence numbers of writer {w}'s events in position order"),
        )?;
    }
    Ok(())
}

/// A subscription delivers only the events its query matches, history and live, and ignores
/// the query's direction and limit.
pub async fn subscription_filter_delivers_only_matches<F: EventStoreFactory>(
    factory: &F,
) -> Result<(), ContractFailure> {
    let ctx = Ctx("subscription_filter_delivers_only_matches");
    let store = factory.create().await;
    ctx.append(
        &store,
        vec![
            ctx.event("contract.a", &["k:1"], "{}")?,        // 1: A
            ctx.event("contract.b", &["k:1"], "{}")?,        // 2: B
            ctx.event("contract.a", &["k:2"], "{}")?,        // 3: B
            ctx.event("contract.a", &["k:1", "x:9"], "{}")?, // 4: A
        ],
        None,
        "append of the history",
    )
    .await?;
    // A: type a with tag k:1. B: type b, or tag k:2.
    let query_a = EventQuery::item(QueryItem::types(["contract.a"]).and_tag(tag("k:1")));
    let query_b =
        EventQuery::item(QueryItem::types(["contract.b"])).or(QueryItem::tagged([tag("k:2")]));
    let cancel = CancellationToken::new();
    let mut sub_a = store.subscribe(query_a.clone(), 0, cancel.clone());
    let mut sub_a_backward =
        store.subscribe(query_a.backward().with_limit(limit(1)), 0, cancel.clone());
    let mut sub_b = store.subscribe(query_b, 0, cancel.clone());

    let mut got_a = ctx
        .collect(&mut sub_a, 2, "subscription A (history)")
        .await?;
    ctx.eq(
        positions_of(&got_a),
        vec![1, 4],
        "history delivered to subscription A",
    )?;
    append_live_events(ctx, &store).await?;
    // The last event matches every subscription, so anything delivered that should not have
    // been shows up before it, in the collected events.
    got_a.extend(ctx.collect(&mut sub_a, 3, "subscription A (live)").await?);
    ctx.eq(
        positions_of(&got_a),
        vec![1, 4, 7, 9, 10],
        "positions delivered to subscription A",
    )?;
    let got = ctx
        .collect(
            &mut sub_a_backward,
            5,
            "subscription A with a backwards limit-1 query",
        )
        .await?;
    ctx.eq(
        positions_of(&got),
        vec![1, 4, 7, 9, 10],
        "positions delivered to subscription A with a backwards limit-1 query \
         (direction and limit are ignored)",
    )?;
    let got = ctx.collect(&mut sub_b, 4, "subscription B").await?;
    ctx.eq(
        positions_of(&got),
        vec![2, 3, 5, 10],
        "positions delivered to subscription B",
    )?;

    cancel.cancel();
    ctx.expect_end(&mut sub_a, "subscription A").await?;
    ctx.expect_end(&mut sub_a_backward, "subscription A backwards")
        .await?;
    ctx.expect_end(&mut sub_b, "subscription B").await
}

/// Appends the live events of `subscription_filter_delivers_only_matches` one by one, at
/// positions 5 to 10.
async fn append_live_events<S: EventStore + ?Sized>(
    ctx: Ctx,
    store: &S,
) -> Result<(), ContractFailure> {
    let live = vec![
        ctx.event("contract.b", &["k:1"], "{}")?,        // 5: B
        ctx.event("contract.c", &["k:1"], "{}")?,        // 6
        ctx.event("contract.a", &["k:1"], "{}")?,        // 7: A
        ctx.event("contract.a", &["k:3"], "{}")?,        // 8
        ctx.event("contract.a", &["k:1"], "{}")?,        // 9: A
        ctx.event("contract.a", &["k:1", "k:2"], "{}")?, // 10: A and B
    ];
    for (i, e) in live.into_iter().enumerate() {
        ctx.append(
            store,
            vec![e],
            None,
            &format!("append of live event {}", i + 5),
        )
        .await?;
    }
    Ok(())
}
