//! [`PostgresEventStore::explain`]: the plans PostgreSQL chooses for a query's statements, for
//! tests and diagnostics.

use tokio_postgres::NoTls;

use crate::PostgresEventStore;
use crate::coverage::{self, Coverage};
use crate::error::db;
use crate::query::{Output, Params};
use krescent_core::query::EventQuery;
use krescent_core::store::StoreError;

impl PostgresEventStore {
    /// The plans PostgreSQL chooses for `query`: `EXPLAIN` of the statement the store runs,
    /// first with the query's values bound (a custom plan), then as the generic plan a
    /// prepared statement may switch to after a few executions; for a query read as a
    /// position range up to some position and with its filter beyond (see the module
    /// documentation), both statements. Runs on a connection of its own. For tests and
    /// diagnostics.
    #[doc(hidden)]
    pub async fn explain(&self, query: &EventQuery) -> Result<String, StoreError> {
        let parts: Vec<(String, EventQuery)> = match self.coverage(query).await? {
            Coverage::Everything if query.items().len() > 1 => vec![(
                "-- read as a range: an item selects every event\n".to_owned(),
                coverage::as_range(query, None),
            )],
            Coverage::Through(through) => {
                let mut parts = vec![(
                    format!(
                        "-- up to position {through} every event has one of the query's \
                         types: read as a range\n"
                    ),
                    coverage::as_range(query, Some(through)),
                )];
                if let Some(rest) = coverage::rest(query, through, 0) {
                    parts.push((format!("-- after position {through}\n"), rest));
                }
                parts
            }
            _ => vec![(String::new(), query.clone())],
        };
        let (client, connection) = self.inner.config.connect(NoTls).await.map_err(db)?;
        let driver = tokio::spawn(connection);
        let result = async {
            let mut out = String::new();
            for (k, (note, part)) in parts.iter().enumerate() {
                out.push_str(note);
                self.explain_statement(&client, part, k, &mut out).await?;
            }
            Ok::<_, tokio_postgres::Error>(out)
        }
        .await;
        drop(client);
        driver.abort();
        result.map_err(db)
    }

    /// Appends the custom and the generic plan of the statement of `query` to `out`, using
    /// the prepared statement name `krescent_explain_<k>`.
    async fn explain_statement(
        &self,
        client: &tokio_postgres::Client,
        query: &EventQuery,
        k: usize,
        out: &mut String,
    ) -> Result<(), tokio_postgres::Error> {
        let compiled = self.sql(query, Output::Rows);
        let sql = &compiled.sql;
        let params = Params::of(query);
        out.push_str(&format!(
            "-- {}\n-- custom plan\n",
            if compiled.per_execution {
                "the store plans this shape at each execution (the custom plan)"
            } else {
                "the store prepares this shape once per connection (PostgreSQL may switch \
                 to the generic plan after five executions)"
            }
        ));
        for row in client
            .query_typed(&format!("EXPLAIN {sql}"), &params.typed())
            .await?
        {
            out.push_str(row.try_get::<_, &str>(0)?);
            out.push('\n');
        }
        // PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN): prepare the statement, force the
        // generic plan and explain an execution. The server quotes the values.
        let typed = params.typed();
        let types: Vec<&str> = typed.iter().map(|(_, t)| t.name()).collect();
        client
            .batch_execute(&format!(
                "SET plan_cache_mode = force_generic_plan; \
                 PREPARE krescent_explain_{k} ({}) AS {sql}",
                types.join(", ")
            ))
            .await?;
        let values = params.texts();
        let explain: String = client
            .query_one(
                &format!(
                    "SELECT 'EXPLAIN EXECUTE krescent_explain_{k}(' || \
                     array_to_string(ARRAY(SELECT quote_literal(v) FROM unnest($1::text[]) v), \
                     ', ') || ')'"
                ),
                &[&values],
            )
            .await?
            .try_get(0)?;
        out.push_str("-- generic plan\n");
        for message in client.simple_query(&explain).await? {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                out.push_str(row.get(0).unwrap_or_default());
                out.push('\n');
            }
        }
        client.batch_execute("RESET plan_cache_mode").await
    }
}
