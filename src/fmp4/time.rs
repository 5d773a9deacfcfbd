//! Track ticks and microseconds: the one conversion between a track's media clock (`mdhd`
//! timescale) and the crate's time unit, so that fragment facts, clips and frame times round
//! the same way.

/// `n / d` rounded to the nearest, halves away from zero.
fn round_div(n: i128, d: i128) -> i128 {
    if n >= 0 {
        (n + d / 2) / d
    } else {
        (n - d / 2) / d
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Ticks of `timescale` to microseconds, rounded to the nearest (so 2.65 s at 90 kHz is not
/// 2.649999 s) with halves rounded up (towards later times, also for negative tick counts such as
/// a picture shown before its GOP's first decode time), computed in i128 so it never overflows,
/// saturating at the ends of i64. A timescale of 0 (which [`super::InitFacts`] refuses) gives 0.
pub fn ticks_to_us(ticks: impl Into<i128>, timescale: u32) -> i64 {
    if timescale == 0 {
        return 0;
    }
    let ts = i128::from(timescale);
    let scaled = ticks.into() * 1_000_000;
    let us = scaled.div_euclid(ts) + i128::from(scaled.rem_euclid(ts) * 2 >= ts);
    saturate(us)
}

/// Microseconds to ticks of `timescale`, rounded to the nearest (halves away from zero).
pub(crate) fn us_to_ticks(us: i64, timescale: u32) -> i64 {
    saturate(round_div(i128::from(us) * i128::from(timescale), 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moved from the clip builder (its `time_conversions_round`).
    #[test]
    fn time_conversions_round() {
        const T0_US: i64 = 1_764_090_000_000_000;
        assert_eq!(us_to_ticks(1_000_000, 90_000), 90_000);
        assert_eq!(us_to_ticks(-5, 1_000_000), -5);
        assert_eq!(us_to_ticks(T0_US, 48_000), T0_US / 1000 * 48);
        assert_eq!(ticks_to_us(3, 48_000), 63);
    }

    /// Moved from the GOP reader (its `rounding_of_negative_and_positive_ticks`).
    #[test]
    fn rounding_of_negative_and_positive_ticks() {
        assert_eq!(ticks_to_us(1, 3), 333_333);
        assert_eq!(ticks_to_us(2, 3), 666_667);
        assert_eq!(ticks_to_us(-1, 3), -333_333);
        assert_eq!(ticks_to_us(-512, 12800), -40_000);
    }

    /// What fragment facts relied on: u64 ticks, rounding to the nearest, no overflow, and a
    /// zero timescale (only in hand-built facts) giving 0.
    #[test]
    fn unsigned_ticks_saturate_and_zero_timescale_is_zero() {
        assert_eq!(ticks_to_us(2_650_000u64 * 90 / 1000, 90_000), 2_650_000);
        assert_eq!(ticks_to_us(u64::MAX, 1), i64::MAX);
        assert_eq!(ticks_to_us(5u64, 0), 0);
        assert_eq!(ticks_to_us(-1i64, 2_000_000), 0, "a half rounds up");
    }
}
