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
}
