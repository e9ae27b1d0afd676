//! The cases of the event store contract, one `pub async fn` each.
//!
//! Every case takes an [`EventStoreFactory`], creates its own fresh store and returns
//! `Err(`[`ContractFailure`]`)` on the first expectation that does not hold. See the
//! [module documentation](crate::testing) for the rules the cases enforce.
//!
//! The cases are grouped by concern, one file each: appends and conditional appends; reads
//! (position ranges, filters, directions, limits, pages); subscriptions (history and live
//! events, concurrency, cancellation); tag values (one rule for every store). All of them are
//! re-exported here, under the path `testing::event_store::<case>`.

mod append;
mod read;
mod subscribe;
mod support;
mod tags;

pub use append::{
    append_and_read_back, conditional_append, conditional_append_on_several_tags,
    failed_conditional_append_stores_nothing,
};
pub use read::{
    backward_limit_one_finds_latest_match, empty_store, match_none_matches_nothing,
    query_filter_semantics, read_pages_yields_every_event_once, read_position_ranges,
};
pub use subscribe::{
    concurrent_appenders_with_live_subscribers, subscribe_from_head_sees_only_new_events,
    subscribe_from_start_while_appending, subscription_filter_delivers_only_matches,
    subscription_sees_burst_of_appends,
};
pub use tags::tag_values_follow_one_rule;

use super::{ContractFailure, EventStoreFactory};

/// Runs every case of the event store contract, each with a fresh store from `factory`, and
/// returns the first failure.
///
/// Needs a tokio runtime with the time driver; see the [module documentation](crate::testing).
/// To see each case pass or fail on its own, use
/// [`event_store_contract_tests!`](crate::event_store_contract_tests) instead.
pub async fn run_event_store_contract<F: EventStoreFactory>(
    factory: F,
) -> Result<(), ContractFailure> {
    let f = &factory;
    empty_store(f).await?;
    append_and_read_back(f).await?;
    read_position_ranges(f).await?;
    backward_limit_one_finds_latest_match(f).await?;
    query_filter_semantics(f).await?;
    match_none_matches_nothing(f).await?;
    conditional_append(f).await?;
    conditional_append_on_several_tags(f).await?;
    failed_conditional_append_stores_nothing(f).await?;
    subscribe_from_start_while_appending(f).await?;
    subscribe_from_head_sees_only_new_events(f).await?;
    subscription_sees_burst_of_appends(f).await?;
    concurrent_appenders_with_live_subscribers(f).await?;
    subscription_filter_delivers_only_matches(f).await?;
    read_pages_yields_every_event_once(f).await?;
    tag_values_follow_one_rule(f).await?;
    Ok(())
}
