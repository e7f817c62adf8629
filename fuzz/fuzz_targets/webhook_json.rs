//! The webhook JSON payload: parse_payload + to_play.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexsync::fuzzing::webhook_json(data));
