//! *When* a model writes a checkpoint: [`CheckpointStrategy`] and its implementations.
//!
//! | strategy                 | writes a checkpoint                                              |
//! |--------------------------|------------------------------------------------------------------|
//! | [`FixedEventRate`]       | once every *n* handled events                                     |
//! | [`FixedTimeRate`]        | at the first event boundary (or when idle) once *d* has passed   |
//! | [`Always`]               | after every handled event                                        |
//! | [`Manual`]               | when its [`ManualTrigger`] is triggered                          |
//! | [`Never`]                | never                                                            |
//!
//! Every strategy can also write when the model shuts down gracefully
//! ([`CheckpointStrategyExt::on_shutdown`]), and two strategies combine with
//! [`or`](CheckpointStrategyExt::or):
//!
//! ```
//! use std::time::Duration;
//! use krescent_core::checkpoint::strategy::{
//!     CheckpointStrategy, CheckpointStrategyExt, FixedEventRate, FixedTimeRate,
//! };
//!
//! // Every 1000 events or every 30 seconds, whichever comes first, and on shutdown.
//! let strategy = FixedEventRate::new(1000)?
//!     .or(FixedTimeRate::new(Duration::from_secs(30))?)
//!     .on_shutdown();
//! assert!(CheckpointStrategy::on_shutdown(&strategy));
//! # Ok::<(), krescent_core::checkpoint::strategy::StrategyError>(())
//! ```
//!
//! # How a runner drives a strategy
//!
//! The model runner owns the strategy (`&mut self` methods, no locking) and calls it as
//! follows:
//!
//! 1. [`started`](CheckpointStrategy::started) once the model has started fresh or been
//!    restored from a checkpoint.
//! 2. [`event_done`](CheckpointStrategy::event_done) at every event boundary, that is after an
//!    event has been fully handled (or skipped: `handled == false`). When it returns `true`
//!    the runner writes a checkpoint at that boundary and then calls
//!    [`written`](CheckpointStrategy::written).
//! 3. When the model has caught up and waits at the head of the stream,
//!    [`idle`](CheckpointStrategy::idle); `true` means: write a checkpoint now if the position
//!    moved since the last one. While waiting with unsaved progress, the runner calls `idle`
//!    again when the [`waker`](CheckpointStrategy::waker) is notified or the
//!    [`idle_deadline`](CheckpointStrategy::idle_deadline) is reached.
//! 4. On a graceful shutdown it writes a last checkpoint if
//!    [`on_shutdown`](CheckpointStrategy::on_shutdown) is `true` (and the position moved).
//!
//! A strategy that returned `true` keeps returning `true` at later boundaries until
//! `written` is called, so a checkpoint that could not be written is tried again.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Decides when a model writes a checkpoint. See the [module documentation](self) for how a
/// runner calls it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a checkpoint strategy",
    note = "use one of `FixedEventRate`, `FixedTimeRate`, `Always`, `Manual` or `Never`, or \
            implement `CheckpointStrategy`"
)]
pub trait CheckpointStrategy: Send + 'static {
    /// The model started (fresh, or restored from a checkpoint): time-based strategies start
    /// their clock, counting strategies reset their count.
    fn started(&mut self) {}

    /// One event boundary passed; `handled` is `false` for an event the model skipped (it
    /// moves the position but does not count). Returns `true` to write a checkpoint at this
    /// boundary.
    fn event_done(&mut self, handled: bool) -> bool;

    /// The model is idle at the head of the stream. Returns `true` to write a checkpoint now
    /// (if the position moved since the last one).
    fn idle(&mut self) -> bool {
        false
    }

    /// While the model is idle with progress that no checkpoint holds yet: the instant at
    /// which [`idle`](Self::idle) will return `true`, so the runner can sleep until then and
    /// ask again. `None` (the default) when only new events or the [`waker`](Self::waker) can
    /// change the answer.
    ///
    /// The instant is read from the strategy's [`Clock`]; with the [`SystemClock`] it is a
    /// real instant a runner can sleep until.
    fn idle_deadline(&self) -> Option<Instant> {
        None
    }

    /// A checkpoint was written: reset counters and clocks.
    fn written(&mut self) {}

    /// Whether to write a checkpoint when the model shuts down gracefully.
    fn on_shutdown(&self) -> bool {
        false
    }

    /// A handle that wakes an idle model so that it calls [`idle`](Self::idle) again (the
    /// [`Manual`] trigger); `None` for the others.
    fn waker(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// Forwards every call to the boxed strategy, so `Box<dyn CheckpointStrategy>` is a strategy.
impl<S: CheckpointStrategy + ?Sized> CheckpointStrategy for Box<S> {
    fn started(&mut self) {
        (**self).started();
    }

    fn event_done(&mut self, handled: bool) -> bool {
        (**self).event_done(handled)
    }

    fn idle(&mut self) -> bool {
        (**self).idle()
    }

    fn idle_deadline(&self) -> Option<Instant> {
        (**self).idle_deadline()
    }

    fn written(&mut self) {
        (**self).written();
    }

    fn on_shutdown(&self) -> bool {
        CheckpointStrategy::on_shutdown(&**self)
    }

    fn waker(&self) -> Option<Arc<Notify>> {
        (**self).waker()
    }
}

/// Combinators for every [`CheckpointStrategy`].
pub trait CheckpointStrategyExt: CheckpointStrategy + Sized {
    /// This strategy, and also a checkpoint when the model shuts down gracefully.
    ///
    /// This method shares its name with the question
    /// [`CheckpointStrategy::on_shutdown`]`(&self) -> bool`. Rust picks this one, which takes
    /// `self`, when it is called on a strategy *value* (`FixedEventRate::new(10)?.on_shutdown()`),
    /// and the question when it is called on a reference (`strategy_ref.on_shutdown()`). To ask
    /// a value, write `CheckpointStrategy::on_shutdown(&strategy)`.
    ///
    /// ```
    /// use krescent_core::checkpoint::strategy::{CheckpointStrategy, CheckpointStrategyExt, Never};
    ///
    /// let strategy = Never.on_shutdown();
    /// assert!(CheckpointStrategy::on_shutdown(&strategy));
    /// assert!(!CheckpointStrategy::on_shutdown(&Never));
    /// ```
    fn on_shutdown(self) -> OnShutdown<Self> {
        OnShutdown::new(self)
    }

    /// A checkpoint whenever this strategy or `other` asks for one. See [`Or`].
    fn or<B: CheckpointStrategy>(self, other: B) -> Or<Self, B> {
        Or::new(self, other)
    }

    /// This strategy as a `Box<dyn CheckpointStrategy>`, for choosing a strategy at run time.
    fn boxed(self) -> Box<dyn CheckpointStrategy> {
        Box::new(self)
    }
}

impl<S: CheckpointStrategy + Sized> CheckpointStrategyExt for S {}

/// A strategy that cannot be built from the given arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// [`FixedEventRate::new`] was given 0.
    #[error("a fixed event rate must checkpoint every 1 or more events, not every 0")]
    ZeroEventRate,
    /// [`FixedTimeRate::new`] was given a zero duration.
    #[error(
        "a fixed time rate needs an interval longer than zero; use `Always` to checkpoint \
         after every event"
    )]
    ZeroInterval,
}

// ---------------------------------------------------------------------------------------------
// FixedEventRate

/// A checkpoint once every *n* handled events.
///
/// Counts events the model handled since the last checkpoint written (or since it started);
/// skipped events move the position but do not count. At the boundary where the count reaches
/// *n* it asks for a checkpoint.
///
/// ```
/// use krescent_core::checkpoint::strategy::{CheckpointStrategy, FixedEventRate};
///
/// let mut every_two = FixedEventRate::new(2)?;
/// every_two.started();
/// assert!(!every_two.event_done(true));
/// assert!(!every_two.event_done(false)); // skipped: does not count
/// assert!(every_two.event_done(true));
/// every_two.written();
/// assert!(!every_two.event_done(true));
/// # Ok::<(), krescent_core::checkpoint::strategy::StrategyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FixedEventRate {
    every: NonZeroU64,
    handled: u64,
}

impl FixedEventRate {
    /// A checkpoint every `events` handled events.
    ///
    /// # Errors
    ///
    /// [`StrategyError::ZeroEventRate`] if `events` is 0.
    pub fn new(events: u64) -> Result<Self, StrategyError> {
        NonZeroU64::new(events)
            .map(Self::from_nonzero)
            .ok_or(StrategyError::ZeroEventRate)
    }

    /// A checkpoint every `events` handled events; cannot fail.
    pub const fn from_nonzero(events: NonZeroU64) -> Self {
        FixedEventRate {
            every: events,
            handled: 0,
        }
    }

    /// How many handled events lie between checkpoints.
    pub const fn events(&self) -> NonZeroU64 {
        self.every
    }
}

impl CheckpointStrategy for FixedEventRate {
    fn started(&mut self) {
        self.handled = 0;
    }

    fn event_done(&mut self, handled: bool) -> bool {
        if handled {
            self.handled = self.handled.saturating_add(1);
        }
        self.handled >= self.every.get()
    }

    fn written(&mut self) {
        self.handled = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// FixedTimeRate

/// A checkpoint at the first event boundary, or while idle, once a fixed interval has passed
/// since the last checkpoint was written or the model started (or was restored).
///
/// Any boundary counts, also one of a skipped event: the position moved, so a checkpoint there
/// saves re-reading it. The interval must be longer than zero
/// ([`StrategyError::ZeroInterval`]); for a checkpoint after every event use [`Always`].
///
/// Time is read from a [`Clock`]: the [`SystemClock`] by default, a [`ManualClock`] in tests.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use krescent_core::checkpoint::strategy::{CheckpointStrategy, FixedTimeRate, ManualClock};
///
/// let clock = ManualClock::new();
/// let mut strategy = FixedTimeRate::with_clock(Duration::from_secs(10), Arc::new(clock.clone()))?;
/// strategy.started();
/// clock.advance(Duration::from_secs(9));
/// assert!(!strategy.event_done(true));
/// clock.advance(Duration::from_secs(1));
/// assert!(strategy.event_done(true));
/// # Ok::<(), krescent_core::checkpoint::strategy::StrategyError>(())
/// ```
#[derive(Clone)]
pub struct FixedTimeRate {
    interval: Duration,
    clock: Arc<dyn Clock>,
    since: Instant,
}

impl FixedTimeRate {
    /// A checkpoint every `interval`, measured with the [`SystemClock`].
    ///
    /// # Errors
    ///
    /// [`StrategyError::ZeroInterval`] if `interval` is zero.
    pub fn new(interval: Duration) -> Result<Self, StrategyError> {
        Self::with_clock(interval, Arc::new(SystemClock))
    }

    /// A checkpoint every `interval`, measured with `clock`.
    ///
    /// # Errors
    ///
    /// [`StrategyError::ZeroInterval`] if `interval` is zero.
    pub fn with_clock(interval: Duration, clock: Arc<dyn Clock>) -> Result<Self, StrategyError> {
        if interval.is_zero() {
            return Err(StrategyError::ZeroInterval);
        }
        let since = clock.now();
        Ok(FixedTimeRate {
            interval,
            clock,
            since,
        })
    }

    /// The interval between checkpoints.
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    fn due(&self) -> bool {
        self.clock.now().saturating_duration_since(self.since) >= self.interval
    }
}

impl fmt::Debug for FixedTimeRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedTimeRate")
            .field("interval", &self.interval)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl CheckpointStrategy for FixedTimeRate {
    fn started(&mut self) {
        self.since = self.clock.now();
    }

    fn event_done(&mut self, _handled: bool) -> bool {
        self.due()
    }

    fn idle(&mut self) -> bool {
        self.due()
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.since.checked_add(self.interval)
    }

    fn written(&mut self) {
        self.since = self.clock.now();
    }
}

// ---------------------------------------------------------------------------------------------
// Always, Never

/// A checkpoint after every handled event (not after skipped ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Always;

impl CheckpointStrategy for Always {
    fn event_done(&mut self, handled: bool) -> bool {
        handled
    }
}

/// No checkpoints (unless combined with another strategy, or
/// [on shutdown](CheckpointStrategyExt::on_shutdown)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Never;

impl CheckpointStrategy for Never {
    fn event_done(&mut self, _handled: bool) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Manual

/// A checkpoint when asked for through a [`ManualTrigger`].
///
/// After [`ManualTrigger::trigger`], the next event boundary (handled or skipped) writes a
/// checkpoint; a model idle at the head of the stream is woken through
/// [`waker`](CheckpointStrategy::waker) and writes at once. Triggers that arrive before the
/// request was acted on merge into one checkpoint.
///
/// ```
/// use krescent_core::checkpoint::strategy::{CheckpointStrategy, Manual};
///
/// let mut strategy = Manual::new();
/// let trigger = strategy.handle();
/// assert!(!strategy.event_done(true));
/// trigger.trigger();
/// assert!(strategy.event_done(true));
/// assert!(!strategy.event_done(true));
/// ```
#[derive(Debug, Default)]
pub struct Manual {
    trigger: ManualTrigger,
}

impl Manual {
    /// A manual strategy with a new trigger; get the trigger with [`handle`](Self::handle).
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle that triggers this strategy; clone it freely.
    pub fn handle(&self) -> ManualTrigger {
        self.trigger.clone()
    }
}

/// A manual strategy that `trigger` and its clones trigger, for when the trigger is made first
/// ([`ManualTrigger::new`]).
impl From<ManualTrigger> for Manual {
    fn from(trigger: ManualTrigger) -> Self {
        Manual { trigger }
    }
}

impl CheckpointStrategy for Manual {
    fn event_done(&mut self, _handled: bool) -> bool {
        self.trigger.take()
    }

    fn idle(&mut self) -> bool {
        self.trigger.take()
    }

    fn waker(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.trigger.shared.notify))
    }
}

/// Asks a [`Manual`] strategy for a checkpoint. Cheap to clone; all clones trigger the same
/// strategy.
#[derive(Debug, Clone, Default)]
pub struct ManualTrigger {
    shared: Arc<TriggerShared>,
}

#[derive(Debug, Default)]
struct TriggerShared {
    pending: AtomicBool,
    notify: Arc<Notify>,
}

impl ManualTrigger {
    /// A trigger not yet attached to a strategy; attach it with [`Manual::from`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a checkpoint: the next event boundary writes one, or an idle model wakes up
    /// and writes one at once.
    pub fn trigger(&self) {
        self.shared.pending.store(true, Ordering::Release);
        self.shared.notify.notify_one();
    }

    /// Whether a trigger is waiting to be acted on.
    pub fn is_pending(&self) -> bool {
        self.shared.pending.load(Ordering::Acquire)
    }

    fn take(&self) -> bool {
        self.shared.pending.swap(false, Ordering::AcqRel)
    }
}

// ---------------------------------------------------------------------------------------------
// Combinators

/// A strategy that also writes a checkpoint when the model shuts down gracefully; made by
/// [`CheckpointStrategyExt::on_shutdown`]. Everything else is the inner strategy's.
#[derive(Debug, Clone, Default)]
pub struct OnShutdown<S> {
    inner: S,
}

impl<S> OnShutdown<S> {
    /// `inner`, and a checkpoint on shutdown.
    pub const fn new(inner: S) -> Self {
        OnShutdown { inner }
    }

    /// The inner strategy.
    pub const fn inner(&self) -> &S {
        &self.inner
    }

    /// The inner strategy, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: CheckpointStrategy> CheckpointStrategy for OnShutdown<S> {
    fn started(&mut self) {
        self.inner.started();
    }

    fn event_done(&mut self, handled: bool) -> bool {
        self.inner.event_done(handled)
    }

    fn idle(&mut self) -> bool {
        self.inner.idle()
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.inner.idle_deadline()
    }

    fn written(&mut self) {
        self.inner.written();
    }

    fn on_shutdown(&self) -> bool {
        true
    }

    fn waker(&self) -> Option<Arc<Notify>> {
        self.inner.waker()
    }
}

/// A checkpoint whenever either of two strategies asks for one; made by
/// [`CheckpointStrategyExt::or`].
///
/// - [`event_done`](CheckpointStrategy::event_done) and [`idle`](CheckpointStrategy::idle)
///   ask *both* strategies (no short-circuit, so both keep counting) and write if either
///   says so;
/// - [`started`](CheckpointStrategy::started) and [`written`](CheckpointStrategy::written)
///   reach both, so a checkpoint written for one resets the other too;
/// - [`on_shutdown`](CheckpointStrategy::on_shutdown) if either wants it;
/// - [`idle_deadline`](CheckpointStrategy::idle_deadline) is the earlier of the two;
/// - [`waker`](CheckpointStrategy::waker) is the first strategy's if it has one, else the
///   second's (a combination of two [`Manual`] strategies wakes an idle model only through the
///   first one's trigger).
#[derive(Debug, Clone, Default)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A, B> Or<A, B> {
    /// `first` or `second`.
    pub const fn new(first: A, second: B) -> Self {
        Or { first, second }
    }

    /// The two strategies.
    pub fn into_parts(self) -> (A, B) {
        (self.first, self.second)
    }
}

impl<A: CheckpointStrategy, B: CheckpointStrategy> CheckpointStrategy for Or<A, B> {
    fn started(&mut self) {
        self.first.started();
        self.second.started();
    }

    fn event_done(&mut self, handled: bool) -> bool {
        let first = self.first.event_done(handled);
        let second = self.second.event_done(handled);
        first || second
    }

    fn idle(&mut self) -> bool {
        let first = self.first.idle();
        let second = self.second.idle();
        first || second
    }

    fn idle_deadline(&self) -> Option<Instant> {
        match (self.first.idle_deadline(), self.second.idle_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn written(&mut self) {
        self.first.written();
        self.second.written();
    }

    fn on_shutdown(&self) -> bool {
        CheckpointStrategy::on_shutdown(&self.first)
            || CheckpointStrategy::on_shutdown(&self.second)
    }

    fn waker(&self) -> Option<Arc<Notify>> {
        self.first.waker().or_else(|| self.second.waker())
    }
}

// ---------------------------------------------------------------------------------------------
// Clocks

/// Where time-based strategies read the time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests. Clones share the time.
///
/// ```
/// use std::time::Duration;
/// use krescent_core::checkpoint::strategy::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Moves the clock forward by `by`. A step past the largest instant the platform can
    /// represent leaves the clock where it is.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock()
    }
}
