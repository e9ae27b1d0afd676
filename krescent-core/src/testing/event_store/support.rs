//! The helpers the event store cases share: the case context that builds failures naming
//! the case, and small constructors and formatters.

use std::fmt::{Debug, Display};
use std::ops::RangeInclusive;
use std::task::Poll;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use crate::event::{NewEvent, RecordedEvent, Tag, Tags};
use crate::query::{AppendCondition, EventQuery, Limit};
use crate::store::{EventStore, StoreError, Subscription};
use crate::testing::ContractFailure;

/// How long a case waits for a subscription before it fails. A failure guard only: cases
/// never wait for time to pass, they wait for events.
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// How far a recorded timestamp may lie from the client's clock (database servers have their
/// own clocks).
pub(super) const CLOCK_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// A reading case: what, query, expected positions.
pub(super) type ReadCase = (&'static str, EventQuery, Vec<u64>);

/// The case being run: builds failures that name it.
#[derive(Clone, Copy)]
pub(super) struct Ctx(pub(super) &'static str);

impl Ctx {
    pub(super) fn fail(self, message: impl Into<String>) -> ContractFailure {
        ContractFailure::new(self.0, message)
    }

    pub(super) fn check(
        self,
        ok: bool,
        message: impl FnOnce() -> String,
    ) -> Result<(), ContractFailure> {
        if ok {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    pub(super) fn eq<T: PartialEq + Debug>(
        self,
        actual: T,
        expected: T,
        what: impl Display,
    ) -> Result<(), ContractFailure> {
        self.check(actual == expected, || {
            format!("{what}: expected {expected:?}, got {actual:?}")
        })
    }

    pub(super) fn store<T>(
        self,
        result: Result<T, StoreError>,
        what: &str,
    ) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("{what} failed: {e}")))
    }

    pub(super) fn joined<T>(
        self,
        result: Result<T, JoinError>,
        what: &str,
    ) -> Result<T, ContractFailure> {
        result.map_err(|e| self.fail(format!("the task of {what} failed: {e}")))
    }

    /// A new event; the suite's own type names and tags are valid.
    pub(super) fn event(
        self,
        event_type: &str,
        tags: &[&str],
        payload: &str,
    ) -> Result<NewEvent, ContractFailure> {
        let tags = Tags::parse(tags.iter().copied())
            .map_err(|e| self.fail(format!("bad tag in the suite itself: {e}")))?;
        NewEvent::new(event_type, tags, payload.as_bytes().to_vec())
            .map_err(|e| self.fail(format!("bad type name in the suite itself: {e}")))
    }

    pub(super) async fn append<S: EventStore + ?Sized>(
        self,
        store: &S,
        events: Vec<NewEvent>,
        condition: Option<AppendCondition>,
        what: &str,
    ) -> Result<Vec<RecordedEvent>, ContractFailure> {
        let n = events.len();
        let recorded = self.store(store.append(events, condition).await, what)?;
        self.eq(
            recorded.len(),
            n,
            format!("number of events returned by the {what}"),
        )?;
        Ok(recorded)
    }

    pub(super) async fn read<S: EventStore + ?Sized>(
        self,
        store: &S,
        query: &EventQuery,
    ) -> Result<Vec<RecordedEvent>, ContractFailure> {
        self.store(store.read(query).await, &format!("read({query:?})"))
    }

    pub(super) async fn positions<S: EventStore + ?Sized>(
        self,
        store: &S,
        query: &EventQuery,
    ) -> Result<Vec<u64>, ContractFailure> {
        Ok(positions_of(&self.read(store, query).await?))
    }

    /// Reads each case's query and compares the positions it returns with the expected ones.
    pub(super) async fn expect_positions<S: EventStore + ?Sized>(
        self,
        store: &S,
        cases: Vec<ReadCase>,
    ) -> Result<(), ContractFailure> {
        for (what, query, expected) in cases {
            self.eq(
                self.positions(store, &query).await?,
                expected,
                format!("read({what})"),
            )?;
        }
        Ok(())
    }

    pub(super) async fn head<S: EventStore + ?Sized>(
        self,
        store: &S,
    ) -> Result<u64, ContractFailure> {
        self.store(store.head().await, "head()")
    }

    /// Receives batches until at least `want` events arrived (more if a batch overshoots, so
    /// that the caller's comparison shows them).
    pub(super) async fn collect(
        self,
        sub: &mut Subscription,
        want: usize,
        what: &str,
    ) -> Result<Vec<RecordedEvent>, ContractFailure> {
        let mut got = Vec::new();
        let outcome = tokio::time::timeout(WAIT, async {
            while got.len() < want {
                match sub.next_batch().await {
                    Some(Ok(batch)) => {
                        if batch.is_empty() {
                            tokio::task::yield_now().await;
                        }
                        got.extend(batch);
                    }
                    Some(Err(e)) => return Err(format!("failed: {e}")),
                    None => return Err("ended".to_owned()),
                }
            }
            Ok(())
        })
        .await;
        let problem = match outcome {
            Ok(Ok(())) => return Ok(got),
            Ok(Err(problem)) => problem,
            Err(_) => format!("delivered nothing more within {WAIT:?}"),
        };
        Err(self.fail(format!(
            "{what}: waiting for {want} events, the subscription {problem} after {} events \
             (positions {})",
            got.len(),
            summary(&got)
        )))
    }

    /// Starts a `next_batch` call on a subscription that has delivered everything, lets it
    /// begin waiting, fires `cancel`, and requires that very call to end (`None`) without
    /// delivering anything. Returns whether the subscription may still need draining (the
    /// call yielded an empty batch instead of ending).
    pub(super) async fn next_batch_then_cancel(
        self,
        sub: &mut Subscription,
        cancel: &CancellationToken,
        what: &str,
    ) -> Result<bool, ContractFailure> {
        let mut call = std::pin::pin!(sub.next_batch());
        let early = futures::poll!(call.as_mut());
        cancel.cancel();
        let ended_early = matches!(early, Poll::Ready(None));
        let outcome = match early {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => match tokio::time::timeout(WAIT, call).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(self.fail(format!(
                        "{what}: a next_batch call waiting for new events did not end within \
                         {WAIT:?} after the cancellation token fired"
                    )));
                }
            },
        };
        match outcome {
            None if ended_early => Err(self.fail(format!(
                "{what}: the subscription ended before it was cancelled"
            ))),
            None => Ok(false),
            Some(Ok(batch)) if batch.is_empty() => Ok(true),
            Some(Ok(batch)) => Err(self.fail(format!(
                "{what}: delivered events at positions {} though nothing new was appended",
                summary(&batch)
            ))),
            Some(Err(e)) => Err(self.fail(format!(
                "{what}: a next_batch call waiting for new events failed when cancelled: {e}"
            ))),
        }
    }

    /// After cancellation, the subscription must end without delivering anything more.
    pub(super) async fn expect_end(
        self,
        sub: &mut Subscription,
        what: &str,
    ) -> Result<(), ContractFailure> {
        let outcome = tokio::time::timeout(WAIT, async {
            loop {
                match sub.next_batch().await {
                    None => return Ok(()),
                    Some(Ok(batch)) if batch.is_empty() => tokio::task::yield_now().await,
                    Some(Ok(batch)) => {
                        return Err(format!(
                            "delivered events at positions {} after cancellation, though \
                             nothing was appended after the events it had delivered",
                            summary(&batch)
                        ));
                    }
                    Some(Err(e)) => return Err(format!("failed after cancellation: {e}")),
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(problem)) => Err(self.fail(format!("{what}: {problem}"))),
            Err(_) => Err(self.fail(format!(
                "{what}: did not end within {WAIT:?} after its cancellation token fired"
            ))),
        }
    }
}

/// A limit known to be non-zero.
pub(super) fn limit(n: u64) -> Option<Limit> {
    Some(Limit::from_const(n))
}

/// A tag the suite spells; every such text is valid.
pub(super) fn tag(text: &str) -> Tag {
    match Tag::parse(text) {
        Ok(tag) => tag,
        Err(e) => panic!("bad tag `{text}` in the contract suite itself: {e}"),
    }
}

pub(super) fn range(r: RangeInclusive<u64>) -> Vec<u64> {
    r.collect()
}

pub(super) fn rev(r: RangeInclusive<u64>) -> Vec<u64> {
    r.rev().collect()
}

pub(super) fn positions_of(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// The positions of `events`, abbreviated when there are many.
pub(super) fn summary(events: &[RecordedEvent]) -> String {
    let p = positions_of(events);
    if p.len() <= 20 {
        format!("{p:?}")
    } else {
        format!("{:?} … {:?}", &p[..10], &p[p.len() - 10..])
    }
}

pub(super) fn describe(result: &Result<Vec<RecordedEvent>, StoreError>) -> String {
    match result {
        Ok(r) => format!("success storing positions {:?}", positions_of(r)),
        Err(e) => format!("the error: {e} ({e:?})"),
    }
}

/// A number field of a recorded JSON payload.
pub(super) fn payload_u64(event: &RecordedEvent, field: &str) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(&event.data)
        .ok()?
        .get(field)?
        .as_u64()
}
