//! The derive compiles with common std names shadowed and under `#![deny(warnings)]`.
#![deny(warnings)]
#![allow(dead_code)]

mod shadowed {
    struct Result;
    struct Option;
    struct String;
    struct Vec;
    struct Box;
    mod core {}

    #[derive(krescent::Event, serde::Serialize, serde::Deserialize)]
    #[krescent(catalog = "hygiene")]
    pub enum Shadowed {
        #[krescent(name = "hygiene.one")]
        One {
            #[krescent(tag)]
            id: u64,
        },
        Two(#[krescent(tag = "t")] u32),
        Three,
    }

    #[derive(krescent::Projection)]
    #[krescent(events = Shadowed, handles(One, Three), savepoint(Two), tags(id = self.id))]
    pub struct Counter {
        pub id: u64,
        pub n: u64,
    }

    impl Counter {
        fn on_one(&mut self, _id: &u64) {
            self.n += 1;
        }
        fn on_two(&mut self, v: &u32) -> ::core::result::Result<(), krescent::HandlerError> {
            self.n = u64::from(*v);
            ::core::result::Result::Ok(())
        }
        fn on_three(&mut self) {}
    }
}

mod renamed {
    extern crate krescent as ks;

    #[derive(ks::Event, serde::Serialize, serde::Deserialize)]
    #[krescent(crate = "ks", catalog = "hygiene.renamed")]
    pub enum ViaRenamedCrate {
        Happened,
    }
}

#[test]
fn shadowed_names_do_not_break_generated_code() {
    use krescent::Event;
    let e = shadowed::Shadowed::One { id: 4 };
    assert_eq!(e.event_type().as_str(), "hygiene.one");
    assert_eq!(e.tags().as_slice()[0].as_str(), "id:4");
    assert_eq!(renamed::ViaRenamedCrate::HAPPENED.as_str(), "Happened");
    use krescent::Projection;
    let c = shadowed::Counter { id: 1, n: 0 };
    assert!(c.init_query().is_some());
}

/// Attributes written inside a `macro_rules!` body resolve `self` and the generated bindings.
mod from_macro_rules {
    use krescent::prelude::*;

    #[derive(Event, Serialize, Deserialize)]
    pub enum Ev {
        Up {
            #[krescent(tag)]
            key: String,
        },
        Reset,
    }

    macro_rules! counter {
        ($name:ident, $($attrs:tt)*) => {
            #[derive(Projection)]
            #[krescent(events = Ev, $($attrs)*, tags(key = self.key))]
            pub struct $name {
                pub key: String,
                pub n: u32,
            }
            impl $name {
                fn on_up(&mut self, _key: &String) {
                    self.n += 1;
                }
                #[allow(dead_code)]
                fn on_reset(&mut self) {
                    self.n = 0;
                }
            }
        };
    }

    counter!(Plain, handles(Up));
    counter!(WithReset, handles(Up), savepoint(Reset));

    #[test]
    fn generated_by_macro_rules() {
        let mut p = Plain {
            key: "a".into(),
            n: 0,
        };
        let e = krescent::RecordedEvent {
            position: 1,
            id: uuid::Uuid::nil(),
            event_type: "Up".into(),
            tags: Tags::empty(),
            timestamp: chrono::Utc::now(),
            data: Default::default(),
        }
        .with_data(Ev::Up { key: "a".into() });
        p.when(&e).unwrap();
        assert_eq!(p.n, 1);
        assert!(
            WithReset {
                key: "a".into(),
                n: 0
            }
            .init_query()
            .is_some()
        );
    }
}
