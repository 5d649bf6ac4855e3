//! RFC 3339 rendering of the store's timestamps (microseconds since the Unix
//! epoch, UTC), for JSON responses.

use event_store::Timestamp;
use time::{Duration, OffsetDateTime};

/// `2026-11-22T02:55:27.123456Z`: always six digits of fraction, where
/// RFC 3339 formatters trim trailing zeros, so that every time of a response
/// has the same shape. Dates before year 0 or after 9999 render with more
/// or fewer digits rather than failing: they do not occur in a log stamped
/// by a clock.
pub fn rfc3339(t: Timestamp) -> String {
    let micros = t.0;
    // With `large-dates`, the calendar reaches further than any count of
    // microseconds: the fallback is for the type's sake.
    let Some(at) = OffsetDateTime::UNIX_EPOCH.checked_add(Duration::microseconds(micros)) else {
        return format!("{micros} microseconds from the Unix epoch");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_render_exactly() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day of a century year divisible by 400).
        assert_eq!(
            rfc3339(Timestamp(951_782_400_000_000 + 1)),
            "2000-02-29T00:00:00.000001Z"
        );
        // date -u -d @1795315727 → 2026-11-22T02:48:47Z
        assert_eq!(
            rfc3339(Timestamp(1_795_315_727_654_321)),
            "2026-11-22T02:48:47.654321Z"
        );
        // Before the epoch: one microsecond earlier.
        assert_eq!(rfc3339(Timestamp(-1)), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn every_day_boundary_for_decades_is_consistent() {
        // Walk day by day from 1970 to 2100 and check the calendar steps.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..47_482i64 {
            assert_eq!(
                rfc3339(Timestamp(days * 86_400_000_000)),
                format!("{y:04}-{m:02}-{d:02}T00:00:00.000000Z"),
                "day {days}"
            );
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn the_farthest_timestamps_render_too() {
        assert!(rfc3339(Timestamp(i64::MAX)).starts_with("294247-"));
        assert!(rfc3339(Timestamp(i64::MIN)).starts_with("-290308-"));
        assert_eq!(
            rfc3339(Timestamp(253_402_300_800_000_000)),
            "10000-01-01T00:00:00.000000Z"
        );
    }
}
