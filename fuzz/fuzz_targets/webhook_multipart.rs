//! The webhook body: first line = Content-Type, rest = multipart body (see plexsync::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexsync::fuzzing::webhook_multipart(data));
