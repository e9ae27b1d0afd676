//! The exact trigger points of every checkpoint strategy.

use std::sync::Arc;
use std::time::Duration;

use krescent_core::checkpoint::strategy::{
    Always, CheckpointStrategy, CheckpointStrategyExt, Clock, FixedEventRate, FixedTimeRate,
    Manual, ManualClock, ManualTrigger, Never, OnShutdown, Or, StrategyError, SystemClock,
};

/// One step a runner takes: an event boundary (handled or skipped) or a moment idle at the
/// head of the stream.
#[derive(Clone, Copy, Debug)]
enum Step {
    Handled,
    Skipped,
    Idle,
}

/// Drives `strategy` like a runner: `started`, then each step, calling `written` whenever the
/// strategy asks for a checkpoint. Returns the 1-based indexes of the steps that wrote.
fn drive<S: CheckpointStrategy>(strategy: &mut S, steps: &[Step]) -> Vec<usize> {
    strategy.started();
    let mut writes = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let write = match step {
            Step::Handled => strategy.event_done(true),
            Step::Skipped => strategy.event_done(false),
            Step::Idle => strategy.idle(),
        };
        if write {
            strategy.written();
            writes.push(i + 1);
        }
    }
    writes
}

/// Whether `strategy` writes on shutdown (the question, not the `CheckpointStrategyExt`
/// combinator of the same name, which a call on a value would pick).
fn wants_shutdown<S: CheckpointStrategy + ?Sized>(strategy: &S) -> bool {
    strategy.on_shutdown()
}

fn handled(n: usize) -> Vec<Step> {
    vec![Step::Handled; n]
}

fn assert_send<T: Send + 'static>() {}
fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn strategies_are_send_and_handles_are_send_sync() {
    assert_send::<FixedEventRate>();
    assert_send::<FixedTimeRate>();
    assert_send::<Always>();
    assert_send::<Never>();
    assert_send::<Manual>();
    assert_send::<OnShutdown<Manual>>();
    assert_send::<Or<FixedEventRate, Manual>>();
    assert_send::<Box<dyn CheckpointStrategy>>();
    assert_send_sync::<ManualTrigger>();
    assert_send_sync::<ManualClock>();
    assert_send_sync::<SystemClock>();
    assert_send_sync::<StrategyError>();
}

// ---------------------------------------------------------------------------------------------
// FixedEventRate

#[test]
fn fixed_event_rate_writes_every_n_handled_events() {
    let mut strategy = FixedEventRate::new(3).unwrap();
    assert_eq!(strategy.events().get(), 3);
    assert_eq!(drive(&mut strategy, &handled(10)), vec![3, 6, 9]);
}

#[test]
fn fixed_event_rate_does_not_count_skipped_events() {
    use Step::{Handled as H, Skipped as S};
    let mut strategy = FixedEventRate::new(3).unwrap();
    // Handled events at steps 1, 3, 5 | 6, 7, 10 | 11, 13, 14.
    let steps = [H, S, H, S, H, H, H, S, S, H, H, S, H, H];
    assert_eq!(drive(&mut strategy, &steps), vec![5, 10, 14]);
}

#[test]
fn fixed_event_rate_ignores_idle() {
    use Step::{Handled as H, Idle as I};
    let mut strategy = FixedEventRate::new(3).unwrap();
    assert_eq!(drive(&mut strategy, &[H, I, H, I, I, H, I]), vec![6]);
}

#[test]
fn fixed_event_rate_keeps_asking_until_written() {
    let mut strategy = FixedEventRate::new(2).unwrap();
    strategy.started();
    assert!(!strategy.event_done(true));
    assert!(strategy.event_done(true));
    // The runner could not write; later boundaries, also skipped ones, ask again.
    assert!(strategy.event_done(false));
    assert!(strategy.event_done(true));
    strategy.written();
    assert!(!strategy.event_done(true));
    assert!(strategy.event_done(true));
}

#[test]
fn fixed_event_rate_restarts_counting_when_started() {
    let mut strategy = FixedEventRate::new(3).unwrap();
    strategy.started();
    assert!(!strategy.event_done(true));
    assert!(!strategy.event_done(true));
    // Restored from a checkpoint: the count starts again.
    strategy.started();
    assert!(!strategy.event_done(true));
    assert!(!strategy.event_done(true));
    assert!(strategy.event_done(true));
}

#[test]
fn fixed_event_rate_of_one_writes_after_every_handled_event() {
    use Step::{Handled as H, Skipped as S};
    let mut strategy = FixedEventRate::new(1).unwrap();
    assert_eq!(drive(&mut strategy, &[H, S, H, H, S]), vec![1, 3, 4]);
}

#[test]
fn fixed_event_rate_of_zero_is_rejected() {
    let error = FixedEventRate::new(0).unwrap_err();
    assert_eq!(error, StrategyError::ZeroEventRate);
    assert!(error.to_string().contains("not every 0"), "{error}");
}

#[test]
fn fixed_event_rate_from_nonzero() {
    const EVERY_TWO: FixedEventRate =
        FixedEventRate::from_nonzero(match std::num::NonZeroU64::new(2) {
            Some(n) => n,
            None => panic!("2 is not zero"),
        });
    let mut strategy = EVERY_TWO;
    assert_eq!(drive(&mut strategy, &handled(5)), vec![2, 4]);
}

// ---------------------------------------------------------------------------------------------
// FixedTimeRate

fn time_rate(secs: u64) -> (FixedTimeRate, ManualClock) {
    let clock = ManualClock::new();
    let strategy =
        FixedTimeRate::with_clock(Duration::from_secs(secs), Arc::new(clock.clone())).unwrap();
    (strategy, clock)
}

#[test]
fn fixed_time_rate_writes_at_the_first_boundary_once_the_interval_passed() {
    let (mut strategy, clock) = time_rate(10);
    assert_eq!(strategy.interval(), Duration::from_secs(10));
    strategy.started();
    assert!(!strategy.event_done(true));
    clock.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    assert!(!strategy.event_done(true), "one nanosecond early");
    clock.advance(Duration::from_nanos(1));
    assert!(strategy.event_done(true), "exactly at the interval");
    strategy.written();
    assert!(!strategy.event_done(true), "right after a checkpoint");

    // No event for a long time: the next boundary writes, once.
    clock.advance(Duration::from_secs(35));
    assert!(strategy.event_done(true));
    strategy.written();
    // The interval counts from that write, not from a fixed grid.
    clock.advance(Duration::from_secs(9));
    assert!(!strategy.event_done(true));
    clock.advance(Duration::from_secs(1));
    assert!(strategy.event_done(true));
}

#[test]
fn fixed_time_rate_boundaries_over_a_timeline() {
    // One event per second; 10 s interval: writes at the boundaries at 10 s, 20 s, 30 s.
    let (mut strategy, clock) = time_rate(10);
    strategy.started();
    let mut writes = Vec::new();
    for second in 1..=35 {
        clock.advance(Duration::from_secs(1));
        if strategy.event_done(true) {
            strategy.written();
            writes.push(second);
        }
    }
    assert_eq!(writes, vec![10, 20, 30]);
}

#[test]
fn fixed_time_rate_counts_skipped_boundaries() {
    let (mut strategy, clock) = time_rate(5);
    strategy.started();
    clock.advance(Duration::from_secs(5));
    // The position moved: a skipped event's boundary is a fine place for a checkpoint.
    assert!(strategy.event_done(false));
}

#[test]
fn fixed_time_rate_starts_its_clock_when_started() {
    let (mut strategy, clock) = time_rate(10);
    clock.advance(Duration::from_secs(60)); // a long restore before the model starts
    strategy.started();
    assert!(!strategy.event_done(true));
    clock.advance(Duration::from_secs(10));
    assert!(strategy.event_done(true));
}

#[test]
fn fixed_time_rate_idle_and_deadline() {
    let (mut strategy, clock) = time_rate(10);
    strategy.started();
    let start = clock.now();
    assert_eq!(
        strategy.idle_deadline(),
        Some(start + Duration::from_secs(10))
    );
    clock.advance(Duration::from_secs(4));
    assert!(!strategy.idle());
    clock.advance(Duration::from_secs(6));
    assert!(strategy.idle());
    strategy.written();
    assert!(!strategy.idle());
    assert_eq!(
        strategy.idle_deadline(),
        Some(start + Duration::from_secs(20))
    );
}

#[test]
fn fixed_time_rate_of_zero_is_rejected() {
    assert_eq!(
        FixedTimeRate::new(Duration::ZERO).unwrap_err(),
        StrategyError::ZeroInterval
    );
    assert_eq!(
        FixedTimeRate::with_clock(Duration::ZERO, Arc::new(ManualClock::new())).unwrap_err(),
        StrategyError::ZeroInterval
    );
    assert!(FixedTimeRate::new(Duration::from_nanos(1)).is_ok());
}

#[test]
fn fixed_time_rate_debug_shows_the_interval() {
    let (strategy, _clock) = time_rate(3);
    let debug = format!("{strategy:?}");
    assert!(debug.starts_with("FixedTimeRate"), "{debug}");
    assert!(debug.contains("3s"), "{debug}");
}

#[test]
fn manual_clock_clones_share_time() {
    let clock = ManualClock::new();
    let other = clock.clone();
    let start = clock.now();
    other.advance(Duration::from_millis(1500));
    assert_eq!(clock.now() - start, Duration::from_millis(1500));
    // An absurd step leaves the clock where it is instead of panicking.
    clock.advance(Duration::MAX);
    assert_eq!(clock.now() - start, Duration::from_millis(1500));
}

// ---------------------------------------------------------------------------------------------
// Always, Never

#[test]
fn always_writes_after_every_handled_event_only() {
    use Step::{Handled as H, Idle as I, Skipped as S};
    let mut strategy = Always;
    assert_eq!(drive(&mut strategy, &[H, S, H, I, S, H]), vec![1, 3, 6]);
    assert!(!wants_shutdown(&strategy));
    assert!(strategy.waker().is_none());
    assert!(strategy.idle_deadline().is_none());
}

#[test]
fn never_writes() {
    use Step::{Handled as H, Idle as I, Skipped as S};
    let mut strategy = Never;
    assert_eq!(
        drive(&mut strategy, &[H, S, H, I, H, H, H, I]),
        Vec::<usize>::new()
    );
    assert!(!wants_shutdown(&strategy));
    assert!(strategy.waker().is_none());
}

// ---------------------------------------------------------------------------------------------
// Manual

#[test]
fn manual_writes_at_the_next_boundary_after_a_trigger() {
    let mut strategy = Manual::new();
    let trigger = strategy.handle();
    strategy.started();
    assert!(!strategy.event_done(true));
    assert!(!trigger.is_pending());
    trigger.trigger();
    assert!(trigger.is_pending());
    assert!(strategy.event_done(true));
    assert!(!trigger.is_pending());
    strategy.written();
    assert!(!strategy.event_done(true), "one trigger, one checkpoint");

    // A skipped event's boundary also serves a trigger.
    trigger.trigger();
    assert!(strategy.event_done(false));
}

#[test]
fn manual_triggers_merge_until_acted_on() {
    let mut strategy = Manual::new();
    let trigger = strategy.handle();
    let clone = trigger.clone();
    trigger.trigger();
    clone.trigger();
    trigger.trigger();
    assert!(strategy.event_done(true));
    assert!(!strategy.event_done(true));
    assert!(!strategy.idle());
}

#[test]
fn manual_idle_is_true_once_per_trigger() {
    let mut strategy = Manual::new();
    let trigger = strategy.handle();
    strategy.started();
    assert!(!strategy.idle());
    trigger.trigger();
    assert!(strategy.idle());
    assert!(!strategy.idle());
    assert!(
        !strategy.event_done(true),
        "the idle checkpoint served the trigger"
    );
}

#[tokio::test]
async fn manual_waker_is_notified_by_trigger() {
    let mut strategy = Manual::new();
    let trigger = strategy.handle();
    let waker = strategy.waker().expect("a manual strategy has a waker");
    assert!(strategy.idle_deadline().is_none());

    // A trigger before anyone waits is remembered (a permit), so the wake-up is not lost.
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(30), waker.notified())
        .await
        .expect("the waker was notified");
    assert!(strategy.idle());

    // A trigger from another task wakes a waiting runner.
    let notified = waker.notified();
    let from_task = trigger.clone();
    let task = tokio::spawn(async move { from_task.trigger() });
    tokio::time::timeout(Duration::from_secs(30), notified)
        .await
        .expect("the waker was notified");
    task.await.unwrap();
    assert!(strategy.idle());
    assert!(!strategy.idle());
}

#[test]
fn manual_waker_is_shared_by_all_triggers() {
    let strategy = Manual::new();
    let a = strategy.waker().unwrap();
    let b = strategy.waker().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn manual_from_a_trigger_made_first() {
    let trigger = ManualTrigger::new();
    let mut strategy = Manual::from(trigger.clone());
    trigger.trigger();
    assert!(strategy.event_done(true));
}

// ---------------------------------------------------------------------------------------------
// On shutdown

#[test]
fn on_shutdown_wrapper_adds_a_shutdown_checkpoint_and_keeps_the_rest() {
    assert!(!wants_shutdown(&FixedEventRate::new(2).unwrap()));
    let mut strategy = FixedEventRate::new(2).unwrap().on_shutdown();
    assert!(wants_shutdown(&strategy));
    assert_eq!(drive(&mut strategy, &handled(5)), vec![2, 4]);
    assert_eq!(strategy.inner().events().get(), 2);

    assert!(wants_shutdown(&Never.on_shutdown()));
    assert!(wants_shutdown(&Always.on_shutdown()));

    let manual = Manual::new();
    let trigger = manual.handle();
    let mut wrapped = manual.on_shutdown();
    assert!(wrapped.waker().is_some());
    trigger.trigger();
    assert!(wrapped.idle());

    let (time, clock) = time_rate(5);
    let mut wrapped = time.on_shutdown();
    wrapped.started();
    assert_eq!(
        wrapped.idle_deadline(),
        Some(clock.now() + Duration::from_secs(5))
    );
    let inner: FixedTimeRate = wrapped.into_inner();
    assert_eq!(inner.interval(), Duration::from_secs(5));
}

#[test]
fn on_shutdown_resolves_to_the_combinator_on_values_and_the_question_on_references() {
    // On a value: the combinator.
    let wrapped: OnShutdown<Never> = Never.on_shutdown();
    // On references (how a runner holding a strategy asks): the question.
    let by_ref: &OnShutdown<Never> = &wrapped;
    assert!(by_ref.on_shutdown());
    let boxed: Box<dyn CheckpointStrategy> = Never.on_shutdown().boxed();
    let checkpoints = Some((0_u8, boxed));
    assert!(checkpoints.as_ref().is_some_and(|(_, s)| s.on_shutdown()));
    // Fully qualified, on anything.
    assert!(!CheckpointStrategy::on_shutdown(&Always));
}

// ---------------------------------------------------------------------------------------------
// Or

#[test]
fn or_writes_when_either_side_asks_and_both_sides_count() {
    // 3 or 5 handled events: both count every event; a write resets both.
    let mut strategy = FixedEventRate::new(3)
        .unwrap()
        .or(FixedEventRate::new(5).unwrap());
    assert_eq!(drive(&mut strategy, &handled(12)), vec![3, 6, 9, 12]);

    // Skipped events count on neither side; the time side fires on its own.
    let (time, clock) = time_rate(10);
    let mut strategy = FixedEventRate::new(3).unwrap().or(time);
    strategy.started();
    assert!(!strategy.event_done(true));
    assert!(!strategy.event_done(false));
    clock.advance(Duration::from_secs(10));
    assert!(strategy.event_done(false), "the time side");
    strategy.written();
    assert!(
        !strategy.event_done(true),
        "both sides were reset by the write"
    );
    assert!(!strategy.event_done(true));
    assert!(
        strategy.event_done(true),
        "three handled events since the write"
    );
}

#[test]
fn or_does_not_short_circuit() {
    // The first side fires at every handled event; the second must still count each one.
    let mut strategy = Always.or(FixedEventRate::new(4).unwrap());
    strategy.started();
    for _ in 0..3 {
        assert!(strategy.event_done(true));
        // Not written: a runner that could not write.
    }
    let (first, mut second) = strategy.into_parts();
    assert_eq!(first, Always);
    assert!(
        second.event_done(true),
        "the second side counted all three events"
    );
}

#[test]
fn or_with_manual_and_time() {
    let (time, clock) = time_rate(10);
    let manual = Manual::new();
    let trigger = manual.handle();
    let mut strategy = time.or(manual);
    strategy.started();
    assert!(strategy.waker().is_some(), "the manual side's waker");
    assert!(!strategy.event_done(true));
    trigger.trigger();
    assert!(strategy.event_done(true));
    strategy.written();
    clock.advance(Duration::from_secs(10));
    assert!(strategy.idle());
    strategy.written();
    assert!(!strategy.idle());

    // Both sides are asked when idle: a pending trigger is consumed even when the time side
    // already fired.
    clock.advance(Duration::from_secs(10));
    trigger.trigger();
    assert!(strategy.idle());
    strategy.written();
    assert!(!trigger.is_pending());
    assert!(!strategy.idle());
}

#[test]
fn or_on_shutdown_and_waker_and_deadline() {
    assert!(!wants_shutdown(&Never.or(Always)));
    assert!(wants_shutdown(&Never.on_shutdown().or(Always)));
    assert!(wants_shutdown(&Never.or(Always.on_shutdown())));

    assert!(Never.or(Always).waker().is_none());
    let manual = Manual::new();
    let expected = manual.waker().unwrap();
    let strategy = Never.or(manual);
    assert!(Arc::ptr_eq(&strategy.waker().unwrap(), &expected));
    let first = Manual::new();
    let expected = first.waker().unwrap();
    let strategy = first.or(Manual::new());
    assert!(Arc::ptr_eq(&strategy.waker().unwrap(), &expected));

    let (slow, clock) = time_rate(30);
    let fast = FixedTimeRate::with_clock(Duration::from_secs(10), Arc::new(clock.clone())).unwrap();
    let mut strategy = slow.or(fast);
    strategy.started();
    assert_eq!(
        strategy.idle_deadline(),
        Some(clock.now() + Duration::from_secs(10))
    );
    let mut strategy =
        Never.or(
            FixedTimeRate::with_clock(Duration::from_secs(7), Arc::new(clock.clone())).unwrap(),
        );
    strategy.started();
    assert_eq!(
        strategy.idle_deadline(),
        Some(clock.now() + Duration::from_secs(7))
    );
    assert_eq!(Never.or(Always).idle_deadline(), None);
}

#[test]
fn or_forwards_started_to_both_sides() {
    let (time, clock) = time_rate(10);
    let mut strategy = FixedEventRate::new(2).unwrap().or(time);
    assert!(!strategy.event_done(true));
    clock.advance(Duration::from_secs(60));
    strategy.started();
    // Both restarted: the count is 0 and the clock starts now.
    assert!(!strategy.event_done(true));
    assert!(strategy.event_done(true));
}

// ---------------------------------------------------------------------------------------------
// Boxed

#[test]
fn boxed_strategies_forward_everything() {
    let manual = Manual::new();
    let trigger = manual.handle();
    let choices: Vec<Box<dyn CheckpointStrategy>> = vec![
        FixedEventRate::new(2).unwrap().boxed(),
        Box::new(Always),
        Box::new(manual.on_shutdown()),
    ];
    let mut writes = Vec::new();
    for mut strategy in choices {
        writes.push(drive(&mut strategy, &handled(4)));
        assert_eq!(strategy.idle_deadline(), None);
        if wants_shutdown(&strategy) {
            assert!(strategy.waker().is_some());
            trigger.trigger();
            assert!(strategy.idle());
        }
    }
    assert_eq!(writes, vec![vec![2, 4], vec![1, 2, 3, 4], vec![]]);

    // A boxed strategy combines like any other.
    let mut combined = Never.boxed().or(FixedEventRate::new(3).unwrap());
    assert_eq!(drive(&mut combined, &handled(6)), vec![3, 6]);
}

#[test]
fn strategy_error_messages() {
    assert!(StrategyError::ZeroInterval.to_string().contains("Always"));
}
