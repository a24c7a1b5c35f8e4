//! The schedule parser (cron fields, `@every`, `@daily`, …): any text is a
//! schedule or an error, never a panic; a schedule's next firing after any
//! time is strictly later, and for a cron schedule it is also the next
//! firing after any moment between the two.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tandem_config::schedule::Schedule;

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    after: i64,
    back: u32,
}

fuzz_target!(|input: Input| {
    let Ok(s) = Schedule::parse(&input.text) else {
        return;
    };
    // Times a scheduler meets: 1970 to 2100.
    let after = input.after.rem_euclid(4_102_444_800);
    if let Some(next) = s.next_after(after) {
        assert!(next > after, "{input:?}: {next}");
        // `@every` counts from the last firing, not on a grid.
        if matches!(s, Schedule::Every(_)) {
            return;
        }
        let between = next - 1 - i64::from(input.back) % (next - after);
        assert!(between >= after);
        assert_eq!(s.next_after(between), Some(next), "{input:?}");
    }
});
