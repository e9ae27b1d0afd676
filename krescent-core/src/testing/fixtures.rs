//! The domain events the tests and benches share: a warehouse's stock movements with a
//! savepoint, and a bookstore's stock. Derived like a user's events, in catalogs of their own
//! (`fixtures.warehouse`, `fixtures.bookstore`) so they never clash with a test's own enums.
//!
//! ```
//! use krescent_core::testing::fixtures::{StockEvent, product_tag};
//! use krescent_core::{Event, Tags};
//!
//! let added = StockEvent::Added { product: "W-1".into(), quantity: 3 };
//! assert_eq!(added.event_type(), StockEvent::ADDED);
//! assert_eq!(added.tags(), Tags::from_tags([product_tag("W-1")]));
//! ```

use serde::{Deserialize, Serialize};

use crate::event::Tag;

/// Stock movements of products, and the savepoint `Counted` (a physical count).
#[derive(krescent_derive::Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(crate = "crate", catalog = "fixtures.warehouse", revision = 1)]
pub enum StockEvent {
    /// Units of a product came in.
    #[krescent(name = "stock.added")]
    Added {
        /// The product, its tag `product`.
        #[krescent(tag)]
        product: String,
        /// How many came in.
        quantity: i64,
    },
    /// Units of a product went out.
    #[krescent(name = "stock.picked")]
    Picked {
        /// The product, its tag `product`.
        #[krescent(tag)]
        product: String,
        /// How many went out.
        quantity: i64,
    },
    /// The savepoint: the stock of a product was counted.
    #[krescent(name = "stock.counted")]
    Counted {
        /// The product, its tag `product`.
        #[krescent(tag)]
        product: String,
        /// The count.
        counted: i64,
    },
}

impl StockEvent {
    /// The product the event is about.
    pub fn product(&self) -> &str {
        match self {
            StockEvent::Added { product, .. }
            | StockEvent::Picked { product, .. }
            | StockEvent::Counted { product, .. } => product,
        }
    }
}

/// The tag of `product`: `product:<product>`.
///
/// # Panics
///
/// When `product` is not a valid tag value (test data only).
pub fn product_tag(product: &str) -> Tag {
    Tag::new("product", product).expect("a valid product tag")
}

/// Copies of books coming in and going out.
#[derive(krescent_derive::Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[krescent(crate = "crate", catalog = "fixtures.bookstore", revision = 1)]
pub enum BookEvent {
    /// Copies of a book came in.
    #[krescent(name = "book.stocked")]
    Stocked {
        /// The book, its tag `isbn`.
        #[krescent(tag)]
        isbn: String,
        /// How many copies.
        copies: u32,
    },
    /// A copy of a book was sold.
    #[krescent(name = "book.sold")]
    Sold {
        /// The book, its tag `isbn`.
        #[krescent(tag)]
        isbn: String,
    },
}
