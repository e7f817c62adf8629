//! A Plex XML answer: the bounded tree and every parser that reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plexsync::fuzzing::plex_xml(data));
