//! libFuzzer entry point: any bytes, as a Lambda invocation payload. The checks themselves are
//! in `check.rs`, which the normal test run shares (tests/fuzz_corpus.rs).

#![no_main]

#[path = "../check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
