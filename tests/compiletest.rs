//! Compile-fail cases: every diagnostic the derives emit, and the rustc errors users meet on
//! generated code. Regenerate the `.stderr` files with `TRYBUILD=overwrite` and review them.

#[test]
#[cfg_attr(miri, ignore)]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*/*.rs");
}
