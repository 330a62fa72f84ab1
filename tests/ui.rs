//! Every misuse of #[entrypoint] the compiler must reject, each with the message a user reads
//! (tests/ui/fail/*.stderr), and every supported shape compiling (tests/ui/pass).
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
