//! The head watcher: a background task that follows the store's head position through
//! `LISTEN <prefix>events` notifications, with a polling fallback and reconnection.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

/// The first wait before reconnecting the listener; doubled after each failure.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait before reconnecting the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Raises the published head to `position` if that is higher; returns whether it changed.
pub(crate) fn publish(head: &watch::Sender<u64>, position: u64) -> bool {
    head.send_if_modified(|h| {
        if position > *h {
            *h = position;
            true
        } else {
            false
        }
    })
}

/// What the head watcher needs; it owns no store handle, so dropping the last store (which
/// cancels `cancel`) ends it.
pub(crate) struct Listener {
    pub config: tokio_postgres::Config,
    pub pool: Pool,
    pub channel: String,
    pub select_head: String,
    pub head: Arc<watch::Sender<u64>>,
    pub poll_interval: Duration,
    pub cancel: CancellationToken,
}

/// A live LISTEN connection: the client (dropping it closes the connection) and the task
/// that drives the connection and publishes notified heads.
struct Connected {
    _client: tokio_postgres::Client,
    driver: JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Listener {
    /// Runs until `cancel` fires.
    pub async fn run(self) {
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = MIN_BACKOFF;
        let mut connected: Option<Connected> = None;
        let mut retry_at = Instant::now();
        loop {
            if connected.is_none() && Instant::now() >= retry_at {
                let attempt = tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    attempt = self.connect() => attempt,
                };
                match attempt {
                    Ok(c) => {
                        tracing::debug!(channel = %self.channel, "postgres event store: listening");
                        connected = Some(c);
                        backoff = MIN_BACKOFF;
                        // Notifications sent while disconnected are lost: catch up now.
                        self.poll_head().await;
                    }
                    Err(e) => {
                        tracing::warn!(
                            channel = %self.channel,
                            error = %e,
                            retry_in = ?backoff,
                            "postgres event store: cannot listen for appends; polling meanwhile"
                        );
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = poll.tick() => self.poll_head().await,
                _ = async {
                    match &mut connected {
                        Some(c) => { let _ = (&mut c.driver).await; }
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::warn!(
                        channel = %self.channel,
                        "postgres event store: the listening connection was lost; reconnecting"
                    );
                    connected = None;
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                _ = tokio::time::sleep_until(retry_at), if connected.is_none() => {}
            }
        }
    }

    /// Opens a connection and sends `LISTEN`.
    async fn connect(&self) -> Result<Connected, tokio_postgres::Error> {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let head = Arc::clone(&self.head);
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if let Ok(position) = n.payload().parse::<u64>() {
                            publish(&head, position);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "postgres event store: listener connection failed");
                        return;
                    }
                }
            }
        });
        let connected = Connected {
            _client: client,
            driver,
        };
        // The channel name is derived from the validated table prefix.
        connected
            ._client
            .batch_execute(&format!("LISTEN {}", self.channel))
            .await?;
        Ok(connected)
    }

    /// Reads the head and publishes it; failures (the database is away) are logged and
    /// retried at the next tick.
    async fn poll_head(&self) {
        let read = async {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            let stmt = client
                .prepare_cached(&self.select_head)
                .await
                .map_err(|e| e.to_string())?;
            let row = client
                .query_one(&stmt, &[])
                .await
                .map_err(|e| e.to_string())?;
            row.try_get::<_, i64>(0).map_err(|e| e.to_string())
        };
        let result = tokio::select! {
            _ = self.cancel.cancelled() => return,
            result = read => result,
        };
        match result {
            Ok(position) => {
                publish(&self.head, u64::try_from(position).unwrap_or(0));
            }
            Err(e) => {
                tracing::debug!(error = %e, "postgres event store: cannot poll the head");
            }
        }
    }
}
