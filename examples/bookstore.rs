//! A read model with checkpoints that survives a restart: the second start restores the
//! checkpoint and processes only the events appended since. Its map is a `CheckpointMap`
//! marked `#[krescent(delta)]`, so checkpoints after the first hold only the titles that
//! changed.
//!
//! Run with `cargo run --example bookstore`.

use krescent::checkpoint::{FileCheckpointStorage, FixedEventRate};
use krescent::prelude::*;

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[krescent(catalog = "bookstore", revision = 1)]
pub enum BookEvent {
    #[krescent(name = "book.stocked")]
    Stocked {
        #[krescent(tag)]
        isbn: String,
        copies: u32,
    },
    #[krescent(name = "book.sold")]
    Sold {
        #[krescent(tag)]
        isbn: String,
    },
}

/// Copies available per ISBN.
#[derive(ReadModel, CheckpointSupport, Default, Debug)]
#[krescent(name = "book.available", version = 1, events = BookEvent, handles(Stocked, Sold))]
pub struct AvailableBooks {
    #[krescent(delta)]
    copies: CheckpointMap<String, u32>,
}

impl AvailableBooks {
    fn on_stocked(&mut self, isbn: &str, copies: &u32) {
        *self.copies.get_or_insert_with(isbn.to_owned(), || 0) += copies;
    }
    fn on_sold(&mut self, isbn: &str) -> EventOutcome {
        match self.copies.get_mut(isbn) {
            Some(n) if *n > 0 => {
                *n -= 1;
                EventOutcome::Handled
            }
            // Selling what is not there changes nothing: skipped.
            _ => EventOutcome::Skipped,
        }
    }
}

fn stocked(isbn: &str, copies: u32) -> BookEvent {
    BookEvent::Stocked {
        isbn: isbn.into(),
        copies,
    }
}
fn sold(isbn: &str) -> BookEvent {
    BookEvent::Sold { isbn: isbn.into() }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("krescent-bookstore-{}", std::process::id()));
    let storage = FileCheckpointStorage::new(&dir)?;
    let store = InMemoryEventStore::new();

    let mut history = Vec::new();
    for i in 0..1_000 {
        history.push(stocked(&format!("isbn-{}", i % 500), 3));
        history.push(sold(&format!("isbn-{}", i % 500)));
    }
    store.append_events(&history, None).await?;

    // First start: no checkpoint, full replay, a checkpoint every 300 handled events; the
    // last events since then are saved by an explicit checkpoint before "shutting down".
    let strategy = || FixedEventRate::new(300);
    let mut first = AvailableBooks::default()
        .configure(|c| c.use_checkpoints(storage.clone(), strategy().unwrap()));
    first.catch_up(&store).await?;
    first.checkpoint_now().await?;
    let m = first.metrics();
    println!(
        "first start: processed {} events, wrote {} checkpoints ({} of them deltas), {} titles",
        m.events_processed(),
        m.checkpoints_written,
        m.deltas_written,
        first.model().copies.len()
    );

    // Meanwhile, the store moves on.
    store
        .append_events(
            &[stocked("isbn-new", 5), sold("isbn-new"), sold("isbn-1")],
            None,
        )
        .await?;

    // Second start: restores the checkpoint and handles only the delta.
    let mut second = AvailableBooks::default()
        .configure(|c| c.use_checkpoints(storage.clone(), strategy().unwrap()));
    let m = second.catch_up(&store).await?;
    println!(
        "second start: restored at position {:?}, processed {} events ({} handled, {} skipped)",
        m.restored_from,
        m.events_processed(),
        m.events_handled,
        m.events_skipped
    );
    let new = second.model().copies.get("isbn-new").copied().unwrap_or(0);
    println!("isbn-new has {new} copies");
    assert_eq!(m.events_processed(), 3);
    assert_eq!(new, 4);

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
