//! What a projector run did: [`ProjectorMetrics`].

/// Counts of what a [`Projector`](super::Projector) did, for one run or accumulated over all
/// runs of a projector ([`Projector::total_metrics`](super::Projector::total_metrics)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProjectorMetrics {
    /// Events the store returned, from the init query and the event query.
    pub events_streamed: u64,
    /// Events decoded and handled by the projection without error.
    pub events_handled: u64,
    /// Queries sent to the store, including those that returned nothing.
    pub queries_done: u64,
    /// The position of the last event handled, if any was.
    pub last_position: Option<u64>,
}

impl ProjectorMetrics {
    /// Adds `later`, which happened after `self`: counts are summed and the last position is
    /// `later`'s when it has one.
    pub(crate) fn absorb(&mut self, later: &ProjectorMetrics) {
        self.events_streamed += later.events_streamed;
        self.events_handled += later.events_handled;
        self.queries_done += later.queries_done;
        if later.last_position.is_some() {
            self.last_position = later.last_position;
        }
    }
}
