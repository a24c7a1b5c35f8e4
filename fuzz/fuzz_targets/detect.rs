//! Protocol detection of transparent mode: any first bytes are classified
//! without a panic, and a decision, once made, stands however many more
//! bytes arrive (the peek is repeated as bytes come).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_fuzz::detect::classify;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let full = classify(data);
    for n in 1..data.len() {
        if let Some(p) = classify(&data[..n]) {
            assert_eq!(Some(p), full, "decided {p:?} on {n} bytes of {data:?}");
        }
    }
});
