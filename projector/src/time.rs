//! RFC 3339 rendering of the store's timestamps (microseconds since the Unix
//! epoch, UTC), for JSON responses.

use event_store::Timestamp;

/// `2026-11-22T02:55:27.123456Z`. Dates before year 0 or after 9999 render
/// with more or fewer digits rather than failing: they do not occur in a log
/// stamped by a clock.
pub fn rfc3339(t: Timestamp) -> String {
    let micros = t.0;
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let in_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60
    )
}

/// Year, month, day of a count of days since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
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
}
