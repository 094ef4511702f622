//! Calendar dates of Unix times, for what people read (`leak status`,
//! `leak-node authority show`): the proleptic Gregorian calendar, UTC.

/// `2026-12-05` for a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn day_to_date(day: u64) -> String {
    let z = i64::try_from(day).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
