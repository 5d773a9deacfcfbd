//! One sample of a track run as readers need it: its fields resolved from the `trun`, else the
//! `tfhd` defaults, else the init's `trex` defaults (ISO/IEC 14496-12 8.8.8), and the sample-flag
//! bits tapedeck reads.

use mp4_atom::TrunEntry;

/// Sample flags bit: `sample_is_non_sync_sample` (ISO/IEC 14496-12 8.8.3.1).
pub(crate) const NON_SYNC_SAMPLE: u32 = 0x0001_0000;

/// Where the flags of a sample came from; only `trex` defaults are weak enough to double-check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagSource {
    Trun,
    Tfhd,
    Trex,
}

/// The values a traf's samples fall back to when their `trun` leaves a field out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SampleDefaults {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
    /// `Tfhd` or `Trex`: which box the default flags come from.
    pub flags_source: FlagSource,
}

/// One sample with every field resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunSample {
    /// Ticks of the track's timescale.
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
    pub flags_source: FlagSource,
    /// Composition offset, ticks.
    pub cts: i64,
}

impl RunSample {
    pub fn is_sync(&self) -> bool {
        self.flags & NON_SYNC_SAMPLE == 0
    }
}

impl SampleDefaults {
    pub fn resolve(&self, entry: TrunEntry) -> RunSample {
        let (flags, flags_source) = match entry.flags {
            Some(f) => (f, FlagSource::Trun),
            None => (self.flags, self.flags_source),
        };
        RunSample {
            duration: entry.duration.unwrap_or(self.duration),
            size: entry.size.unwrap_or(self.size),
            flags,
            flags_source,
            cts: entry.cts.unwrap_or(0),
        }
    }
}
