//! Fuzz target for the scanner: never panics; no card number survives as a digit run; the streaming writer
//! gives the one-shot result whatever the split; str and bytes APIs agree.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use palisade_redaction::{Redactor, is_pan, redact, redact_bytes};

fuzz_target!(|data: &[u8]| {
    let out = redact_bytes(data);

    // No maximal run of 13–19 digits in the output is a card number.
    let mut i = 0;
    while i < out.len() {
        if out[i].is_ascii_digit() {
            let s = i;
            while i < out.len() && out[i].is_ascii_digit() {
                i += 1;
            }
            assert!(!is_pan(&out[s..i]), "card survived: {:?}", String::from_utf8_lossy(&out[s..i]));
        } else {
            i += 1;
        }
    }

    // Streaming with a split taken from the data equals one-shot.
    let split = data.first().map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut w = Redactor::new().writer(Vec::new());
    w.write_all(&data[..split]).unwrap();
    w.write_all(&data[split..]).unwrap();
    assert_eq!(w.into_inner().unwrap(), &*out);

    if let Ok(s) = std::str::from_utf8(data) {
        assert_eq!(redact(s).as_bytes(), &*out);
    }
});
