//! `prft` (producer reference time): the producer's wall clock for a media time. It is the first
//! source of a fragment's producer time (DESIGN.md, "Time rules").

use mp4_atom::Decode;

use super::Fmp4Error;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_TO_UNIX_SECS: i128 = 2_208_988_800;

/// A decoded `prft` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerReference {
    /// The track whose `media_time` this refers to.
    pub reference_track_id: u32,
    /// The NTP timestamp converted to microseconds since the Unix epoch.
    pub utc_time_us: i64,
    /// Media time of the reference track (in its timescale) that corresponds to `utc_time_us`.
    pub media_time: u64,
}

impl ProducerReference {
    /// Decodes a whole `prft` box (header included). `offset` is used in messages.
    pub(crate) fn parse(prft_box: &[u8], offset: u64) -> Result<Self, Fmp4Error> {
        let prft = mp4_atom::Prft::decode(&mut &prft_box[..])
            .map_err(|e| Fmp4Error::decode("prft box", offset, e))?;
        Ok(ProducerReference {
            reference_track_id: prft.reference_track_id,
            utc_time_us: ntp_to_unix_us(prft.ntp_timestamp),
            media_time: prft.media_time,
        })
    }
}

/// NTP 32.32 fixed point seconds since 1900 to microseconds since 1970 (era 0, i.e. until 2036).
pub(crate) fn ntp_to_unix_us(ntp: u64) -> i64 {
    let secs = i128::from(ntp >> 32) - NTP_TO_UNIX_SECS;
    let frac_us = (i128::from(ntp & 0xffff_ffff) * 1_000_000) >> 32;
    let us = secs * 1_000_000 + frac_us;
    us.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_conversion() {
        assert_eq!(ntp_to_unix_us(2_208_988_800u64 << 32), 0);
        // 2024-01-01T00:00:00.5Z
        let ntp = ((1_704_067_200u64 + 2_208_988_800) << 32) | 0x8000_0000;
        assert_eq!(ntp_to_unix_us(ntp), 1_704_067_200_500_000);
        assert_eq!(ntp_to_unix_us(0), -2_208_988_800_000_000);
    }
}
