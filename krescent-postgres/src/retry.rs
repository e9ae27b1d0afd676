//! Running an operation of a storage again on another pooled connection when the one it got
//! turns out to be dead (the server restarted, the backend was terminated): [`with_retry!`],
//! [`Retry`], [`Attempt`], and the detection of a lost connection.

use std::error::Error as StdError;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::error::SqlState;

use crate::error::{PostgresError, describe};

/// How one attempt of an operation failed.
pub(crate) enum Attempt {
    /// The connection failed at a point where the operation may run again: if it was lost,
    /// the operation runs again on another connection.
    Lost(tokio_postgres::Error),
    /// The operation failed for good; the error becomes the backend error's source.
    Failed(Box<dyn StdError + Send + Sync>),
}

/// A database error at a point where the operation may safely run again.
pub(crate) fn lost(error: tokio_postgres::Error) -> Attempt {
    Attempt::Lost(error)
}

/// A database error after which the operation must not run again.
pub(crate) fn failed(error: tokio_postgres::Error) -> Attempt {
    Attempt::Failed(Box::new(PostgresError::Database(error)))
}

/// Whether `error` means the connection is gone (rather than a statement failing on a live
/// connection).
fn connection_lost(error: &tokio_postgres::Error, client: &Object) -> bool {
    if error.is_closed() || client.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    StdError::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// Runs `$body` (an expression giving `Result<T, Attempt>`, using the pooled connection
/// `$client`) and evaluates to `Result<T, E>`. When the body fails with [`Attempt::Lost`]
/// because the connection is gone, the connection is removed from the pool and the body runs
/// again on another one, as many times as the pool has connections (each may be dead) plus
/// one. `$backend` turns the source of a failure into `E`.
///
/// A macro rather than a function taking a closure: the body's future borrows the
/// connection, and a future returned by a closure for any borrow cannot be shown to be `Send`.
macro_rules! with_retry {
    ($pool:expr, $backend:expr, |$client:ident| $body:expr) => {{
        let pool: &::deadpool_postgres::Pool = $pool;
        let mut retry = $crate::retry::Retry::new(pool);
        loop {
            #[allow(unused_mut)]
            let mut $client = match pool.get().await {
                Ok(client) => client,
                Err(e) => break Err(($backend)(retry.pool_error(e))),
            };
            let outcome: Result<_, $crate::retry::Attempt> = async { $body }.await;
            match retry.next(outcome, $client) {
                $crate::retry::Next::Done(value) => break Ok(value),
                $crate::retry::Next::Again => {}
                $crate::retry::Next::Fail(source) => {
                    break Err(($backend)(source));
                }
            }
        }
    }};
}
pub(crate) use with_retry;

/// The attempts of one operation run by [`with_retry!`].
pub(crate) struct Retry {
    attempt: usize,
    attempts: usize,
}

/// What [`with_retry!`] does after an attempt.
pub(crate) enum Next<T> {
    /// Return the value.
    Done(T),
    /// Run the operation again on another connection.
    Again,
    /// Fail with this source.
    Fail(Box<dyn StdError + Send + Sync>),
}

impl Retry {
    /// Attempts for an operation on `pool`: one per connection it may hold, plus one.
    pub(crate) fn new(pool: &Pool) -> Self {
        Retry {
            attempt: 0,
            attempts: pool.status().max_size + 1,
        }
    }

    /// No connection could be had.
    pub(crate) fn pool_error(
        &self,
        error: deadpool_postgres::PoolError,
    ) -> Box<dyn StdError + Send + Sync> {
        Box::new(PostgresError::Pool(error))
    }

    /// What to do after an attempt on `client` ended with `outcome`.
    pub(crate) fn next<T>(&mut self, outcome: Result<T, Attempt>, client: Object) -> Next<T> {
        self.attempt += 1;
        match outcome {
            Ok(value) => Next::Done(value),
            Err(Attempt::Lost(error))
                if self.attempt < self.attempts && connection_lost(&error, &client) =>
            {
                tracing::debug!(
                    error = %describe(&error),
                    attempt = self.attempt,
                    "a pooled PostgreSQL connection was lost; running the operation again on \
                     another"
                );
                // Out of the pool: the next `get` recycles or opens another connection.
                drop(Object::take(client));
                Next::Again
            }
            Err(Attempt::Lost(error)) => Next::Fail(Box::new(PostgresError::Database(error))),
            Err(Attempt::Failed(source)) => Next::Fail(source),
        }
    }
}
