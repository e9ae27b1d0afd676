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
