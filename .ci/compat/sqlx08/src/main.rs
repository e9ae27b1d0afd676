//! Uses one item of krescent and one of sqlx 0.8, so both are compiled into one program.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _store = krescent::SqliteEventStore::open_in_memory()?;
    let _pool = sqlx::postgres::PgPoolOptions::new().max_connections(1);
    Ok(())
}
