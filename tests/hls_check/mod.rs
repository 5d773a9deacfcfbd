//! A small HLS playlist parser and rule checker for the HLS tests (no playlist crate: the ones we
//! know drop LL-HLS tags). Rule numbers refer to shared/reference/hls-cmaf-rules.md ("ref").
//!
//! Three layers:
//! - [`MediaPlaylist::parse`] + [`check_media`]: rules that need only the text;
//! - [`Truth`] + [`check_against_truth`]: the playlist against the stored fragment rows
//!   (MSN/DSN, PDT, EXTINF, parts, DISCONTINUITY, MAP), with the segment structure recomputed
//!   from the rows the way DESIGN.md defines it;
//! - [`Tracker`]: rules across reloads of one live playlist.
//!
//! Checks return a list of problems (strings) instead of panicking, so a test can report every
//! violation of a run at once.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

/// Parses an attribute list (`A=1,B="x,y",C=YES`) into name → value (quotes removed).
pub fn attributes(list: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            out.insert(rest.to_string(), String::new());
            break;
        };
        let name = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = quoted[..end].to_string();
            rest = quoted.get(end + 1..).unwrap_or("");
            rest = rest.strip_prefix(',').unwrap_or(rest);
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = rest.get(end + 1..).unwrap_or("");
        }
        out.insert(name, value);
        rest = rest.trim_start();
    }
    out
}

/// Milliseconds since the Unix epoch of an ISO 8601 / RFC 3339 date-time.
pub fn parse_date_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Rounds like the TARGETDURATION rule (nearest integer, halves up).
pub fn round_half_up(x: f64) -> i64 {
    (x + 0.5).floor() as i64
}

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Segment {
    pub msn: i64,
    pub dsn: i64,
    /// An EXT-X-DISCONTINUITY tag comes right before this segment.
    pub discontinuity: bool,
    /// The EXT-X-MAP URI in effect.
    pub map: Option<String>,
    /// The EXT-X-MAP tag was written for this segment (not inherited).
    pub map_here: bool,
    pub pdt_ms: Option<i64>,
    pub extinf: Option<f64>,
    /// None: the open (still growing) segment of an LL-HLS playlist.
    pub uri: Option<String>,
    pub parts: Vec<Part>,
}

impl Segment {
    /// The fragment number that names this segment: `segments/{n}.m4s` or `parts/{n}.0.m4s`.
    pub fn first_fragment(&self) -> Option<i64> {
        if let Some(u) = &self.uri {
            return segment_number(u);
        }
        self.parts
            .first()
            .and_then(|p| part_numbers(&p.uri))
            .map(|(n, _)| n)
    }
}

/// `segments/{n}.m4s[?q]` → n.
pub fn segment_number(uri: &str) -> Option<i64> {
    let path = uri.split('?').next()?;
    path.strip_prefix("segments/")?
        .strip_suffix(".m4s")?
        .parse()
        .ok()
}

/// `parts/{n}.{i}.m4s[?q]` → (n, i).
pub fn part_numbers(uri: &str) -> Option<(i64, i64)> {
    let path = uri.split('?').next()?;
    let stem = path.strip_prefix("parts/")?.strip_suffix(".m4s")?;
    let (n, i) = stem.split_once('.')?;
    Some((n.parse().ok()?, i.parse().ok()?))
}

/// `init/{id}.mp4[?q]` → id.
pub fn init_id(uri: &str) -> Option<i64> {
    let path = uri.split('?').next()?;
    path.strip_prefix("init/")?
        .strip_suffix(".mp4")?
        .parse()
        .ok()
}

#[derive(Debug, Clone, Default)]
pub struct MediaPlaylist {
    pub text: String,
    pub version: Option<i64>,
    pub target_duration: Option<i64>,
    pub media_sequence: Option<i64>,
    pub disc_sequence: Option<i64>,
    pub playlist_type: Option<String>,
    pub independent_segments: bool,
    pub endlist: bool,
    pub part_target: Option<f64>,
    pub server_control: Option<BTreeMap<String, String>>,
    pub preload_hints: Vec<BTreeMap<String, String>>,
    pub segments: Vec<Segment>,
    /// Structural problems found while parsing (tag order, bad values, duplicates).
    pub problems: Vec<String>,
}

impl MediaPlaylist {
    pub fn parse(text: &str) -> MediaPlaylist {
        let mut pl = MediaPlaylist {
            text: text.to_string(),
            ..Default::default()
        };
        let mut p = |m: String| pl_problem(&mut pl.problems, m);
        let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
        if lines.first() != Some(&"#EXTM3U") {
            p("the first line is not #EXTM3U (ref 1.2 item 12)".into());
        }
        if text.starts_with('\u{feff}') {
            p("playlist starts with a BOM (ref 1.2 item 12)".into());
        }
        let mut segments_started = false;
        let mut cur = Segment::default();
        let mut cur_has_tags = false;
        let mut map: Option<String> = None;
        let mut map_here = false;
        let mut versions = 0;
        let mut segments = Vec::new();
        for (no, line) in lines.iter().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let at = |what: &str| format!("line {}: {what}", no + 1);
            if !line.starts_with('#') {
                segments_started = true;
                if cur.extinf.is_none() {
                    p(at(&format!("URI {line} has no EXTINF")));
                }
                cur.uri = Some(line.to_string());
                cur.map = map.clone();
                cur.map_here = map_here;
                map_here = false;
                segments.push(std::mem::take(&mut cur));
                cur_has_tags = false;
                continue;
            }
            if !line.starts_with("#EXT") {
                continue; // a comment
            }
            let (tag, value) = line.split_once(':').unwrap_or((line, ""));
            let header_tag = |p: &mut dyn FnMut(String), name: &str| {
                if segments_started {
                    p(at(&format!(
                        "{name} after the first media segment (ref 1.2)"
                    )));
                }
            };
            match tag {
                "#EXTM3U" => p(at("#EXTM3U repeated")),
                "#EXT-X-VERSION" => {
                    versions += 1;
                    header_tag(&mut p, tag);
                    pl.version = value.parse().ok();
                }
                "#EXT-X-TARGETDURATION" => {
                    header_tag(&mut p, tag);
                    pl.target_duration = value.parse().ok();
                    if pl.target_duration.is_none() {
                        p(at(
                            "TARGETDURATION is not a decimal integer (ref 1.2 item 1)",
                        ));
                    }
                }
                "#EXT-X-MEDIA-SEQUENCE" => {
                    header_tag(&mut p, tag);
                    pl.media_sequence = value.parse().ok();
                }
                "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                    header_tag(&mut p, tag);
                    pl.disc_sequence = value.parse().ok();
                }
                "#EXT-X-PLAYLIST-TYPE" => {
                    header_tag(&mut p, tag);
                    pl.playlist_type = Some(value.to_string());
                }
                "#EXT-X-INDEPENDENT-SEGMENTS" => {
                    if pl.independent_segments {
                        p(at("INDEPENDENT-SEGMENTS repeated (ref 1.2 item 11)"));
                    }
                    pl.independent_segments = true;
                }
                "#EXT-X-SERVER-CONTROL" => {
                    header_tag(&mut p, tag);
                    pl.server_control = Some(attributes(value));
                }
                "#EXT-X-PART-INF" => {
                    header_tag(&mut p, tag);
                    pl.part_target = attributes(value)
                        .get("PART-TARGET")
                        .and_then(|v| v.parse().ok());
                    if pl.part_target.is_none() {
                        p(at("PART-INF without a PART-TARGET (ref 2.1 item 1)"));
                    }
                }
                "#EXT-X-MAP" => {
                    segments_started = true;
                    if !cur.parts.is_empty() {
                        p(at(
                            "MAP after an EXT-X-PART of its segment (ref 1.2 item 6)",
                        ));
                    }
                    let a = attributes(value);
                    match a.get("URI") {
                        Some(u) => map = Some(u.clone()),
                        None => p(at("MAP without URI (ref 1.2 item 6)")),
                    }
                    map_here = true;
                    cur_has_tags = true;
                }
                "#EXT-X-DISCONTINUITY" => {
                    segments_started = true;
                    if !cur.parts.is_empty() {
                        p(at(
                            "DISCONTINUITY after an EXT-X-PART of its segment (ref 2.1 item 2)",
                        ));
                    }
                    cur.discontinuity = true;
                    cur_has_tags = true;
                }
                "#EXT-X-PROGRAM-DATE-TIME" => {
                    segments_started = true;
                    if !cur.parts.is_empty() {
                        p(at(
                            "PROGRAM-DATE-TIME after an EXT-X-PART of its segment (ref 2.1 item 2)",
                        ));
                    }
                    if cur.pdt_ms.is_some() {
                        p(at("two PROGRAM-DATE-TIME tags for one segment"));
                    }
                    cur.pdt_ms = parse_date_ms(value);
                    if cur.pdt_ms.is_none() {
                        p(at(&format!("PROGRAM-DATE-TIME {value} is not ISO 8601 with a time zone (ref 1.2 item 7)")));
                    } else if !value.contains('.') {
                        p(at(
                            "PROGRAM-DATE-TIME without millisecond precision (ref 1.2 item 7)",
                        ));
                    }
                    cur_has_tags = true;
                }
                "#EXT-X-PART" => {
                    segments_started = true;
                    let a = attributes(value);
                    let uri = a.get("URI").cloned().unwrap_or_default();
                    let duration = a.get("DURATION").and_then(|d| d.parse().ok());
                    if uri.is_empty() || duration.is_none() {
                        p(at("EXT-X-PART without URI or DURATION (ref 2.1 item 2)"));
                    }
                    cur.parts.push(Part {
                        uri,
                        duration: duration.unwrap_or(0.0),
                        independent: a.get("INDEPENDENT").map(String::as_str) == Some("YES"),
                    });
                    cur_has_tags = true;
                }
                "#EXTINF" => {
                    segments_started = true;
                    let d = value.split(',').next().unwrap_or("");
                    cur.extinf = d.trim().parse().ok();
                    if cur.extinf.is_none() {
                        p(at(&format!("EXTINF '{value}' has no duration")));
                    }
                    cur_has_tags = true;
                }
                "#EXT-X-PRELOAD-HINT" => pl.preload_hints.push(attributes(value)),
                "#EXT-X-ENDLIST" => pl.endlist = true,
                "#EXT-X-STREAM-INF" | "#EXT-X-MEDIA" => {
                    p(at(&format!("{tag} in a media playlist")))
                }
                _ => {}
            }
        }
        if cur_has_tags {
            if cur.extinf.is_some() {
                p("an EXTINF at the end has no URI".into());
            } else if cur.parts.is_empty() {
                p("segment tags at the end with neither parts nor a URI".into());
            }
            if !cur.parts.is_empty() {
                cur.map = map.clone();
                cur.map_here = map_here;
                segments.push(cur);
            }
        }
        if versions != 1 {
            p(format!(
                "{versions} EXT-X-VERSION tags; exactly one expected (ref 1.3)"
            ));
        }
        let ms = pl.media_sequence.unwrap_or(0);
        let mut dsn = pl.disc_sequence.unwrap_or(0);
        for (i, s) in segments.iter_mut().enumerate() {
            s.msn = ms + i as i64;
            dsn += i64::from(s.discontinuity);
            s.dsn = dsn;
        }
        pl.segments = segments;
        pl
    }

    pub fn last_part_uri(&self) -> Option<&str> {
        self.segments
            .iter()
            .rev()
            .find_map(|s| s.parts.last())
            .map(|p| p.uri.as_str())
    }

    pub fn part_uris(&self) -> impl Iterator<Item = &str> {
        self.segments
            .iter()
            .flat_map(|s| s.parts.iter().map(|p| p.uri.as_str()))
    }

    pub fn complete(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.uri.is_some())
    }

    pub fn open_segment(&self) -> Option<&Segment> {
        self.segments.last().filter(|s| s.uri.is_none())
    }

    pub fn hint_uri(&self) -> Option<&str> {
        self.preload_hints
            .iter()
            .find(|h| h.get("TYPE").map(String::as_str) == Some("PART"))
            .and_then(|h| h.get("URI"))
            .map(String::as_str)
    }
}

fn pl_problem(list: &mut Vec<String>, m: String) {
    list.push(m);
}

/// What a playlist is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sliding live window: no PLAYLIST-TYPE, no ENDLIST.
    Live,
    /// EVENT, still open (no ENDLIST).
    Event,
    /// VOD with ENDLIST.
    Vod,
}

/// The rules that need only the playlist text. Returns the problems found.
pub fn check_media(pl: &MediaPlaylist, kind: Kind) -> Vec<String> {
    let mut out = pl.problems.clone();
    let mut p = |m: String| out.push(m);
    match pl.version {
        Some(v) if v >= 6 => {}
        v => p(format!(
            "EXT-X-VERSION {v:?}: fMP4 (EXT-X-MAP) needs ≥ 6 (ref 1.3)"
        )),
    }
    let td = match pl.target_duration {
        Some(td) if td >= 1 => td,
        td => {
            p(format!(
                "EXT-X-TARGETDURATION {td:?}: required, ≥ 1 (ref 1.2 item 1)"
            ));
            i64::MAX
        }
    };
    if pl.media_sequence.is_none() {
        p("no EXT-X-MEDIA-SEQUENCE (ref 1.2 item 3)".into());
    }
    if pl.disc_sequence.is_none() {
        p("no EXT-X-DISCONTINUITY-SEQUENCE (ref 1.2 item 4, Apple 8.17)".into());
    }
    if pl.segments.is_empty() {
        p("no media segments".into());
    }
    let n = pl.segments.len();
    for (i, s) in pl.segments.iter().enumerate() {
        let name = s
            .uri
            .clone()
            .unwrap_or_else(|| format!("open segment MSN {}", s.msn));
        if s.map.is_none() {
            p(format!("{name}: no EXT-X-MAP applies (ref 1.1 item 1)"));
        }
        if s.pdt_ms.is_none() {
            p(format!(
                "{name}: no EXT-X-PROGRAM-DATE-TIME (ref 1.2 item 7)"
            ));
        }
        match (s.uri.is_some(), s.extinf) {
            (true, Some(d)) => {
                if round_half_up(d) > td {
                    p(format!(
                        "{name}: EXTINF {d} rounds above TARGETDURATION {td} (ref 1.2 item 1)"
                    ));
                }
                if d <= 0.0 {
                    p(format!("{name}: EXTINF {d} is not positive"));
                }
                if !s.parts.is_empty() {
                    let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
                    let slack = 0.0005 * (s.parts.len() as f64 + 1.0) + 1e-9;
                    if (sum - d).abs() > slack {
                        p(format!(
                            "{name}: EXTINF {d} but its parts add up to {sum:.4} (ref 2.1 item 3)"
                        ));
                    }
                }
            }
            (true, None) => p(format!("{name}: no EXTINF")),
            (false, _) => {
                if i + 1 != n {
                    p(format!(
                        "{name}: a segment without URI that is not the last"
                    ));
                }
                if kind != Kind::Live {
                    p(format!("{name}: an open segment in a {kind:?} playlist"));
                }
                if s.parts.is_empty() {
                    p(format!("{name}: open segment without parts"));
                }
            }
        }
        for part in &s.parts {
            match pl.part_target {
                Some(pt) if part.duration > pt + 1e-9 => p(format!(
                    "{}: DURATION {} > PART-TARGET {pt} (ref 2.1 item 2)",
                    part.uri, part.duration
                )),
                Some(_) => {}
                None => p(format!(
                    "{}: EXT-X-PART without EXT-X-PART-INF (ref 2.1 item 1)",
                    part.uri
                )),
            }
        }
        if i > 0 {
            let prev = &pl.segments[i - 1];
            if let (Some(a), Some(b)) = (prev.pdt_ms, s.pdt_ms) {
                if b <= a {
                    p(format!(
                        "{name}: PROGRAM-DATE-TIME does not increase (ref 1.2 item 7)"
                    ));
                }
                if !s.discontinuity {
                    if let Some(d) = prev.extinf {
                        let expect = a as f64 + d * 1000.0;
                        if (b as f64 - expect).abs() > 2.0 {
                            p(format!(
                                "{name}: starts {} ms after the previous segment's end without a DISCONTINUITY (ref 1.1 item 5, 1.2 item 5)",
                                b as f64 - expect
                            ));
                        }
                    }
                }
            }
        }
    }
    if let Some(pt) = pl.part_target {
        match pl
            .server_control
            .as_ref()
            .and_then(|c| c.get("PART-HOLD-BACK"))
            .and_then(|v| v.parse::<f64>().ok())
        {
            Some(phb) if phb + 1e-9 >= 2.0 * pt => {}
            phb => p(format!(
                "PART-HOLD-BACK {phb:?} must be present and ≥ 2 × PART-TARGET {pt} (ref 2.1 item 4)"
            )),
        }
    }
    if pl.endlist && !pl.preload_hints.is_empty() {
        p("EXT-X-PRELOAD-HINT in a playlist with EXT-X-ENDLIST (ref 1.2 item 9)".into());
    }
    for t in ["PART", "MAP"] {
        let count = pl
            .preload_hints
            .iter()
            .filter(|h| h.get("TYPE").map(String::as_str) == Some(t))
            .count();
        if count > 1 {
            p(format!(
                "{count} PRELOAD-HINTs of TYPE={t} (ref 2.1 item 6)"
            ));
        }
    }
    for h in &pl.preload_hints {
        if !h.contains_key("URI") || !h.contains_key("TYPE") {
            p(format!("PRELOAD-HINT without TYPE or URI: {h:?}"));
        }
    }
    match kind {
        Kind::Live => {
            if let Some(t) = &pl.playlist_type {
                p(format!(
                    "live playlist has PLAYLIST-TYPE {t} (ref 1.2 item 10)"
                ));
            }
            if pl.endlist {
                p("live playlist has ENDLIST".into());
            }
            let can_block = pl
                .server_control
                .as_ref()
                .and_then(|c| c.get("CAN-BLOCK-RELOAD"))
                .map(String::as_str);
            if can_block != Some("YES") {
                p(
                    "live playlist without SERVER-CONTROL:CAN-BLOCK-RELOAD=YES (ref 2.5 item 5)"
                        .into(),
                );
            }
        }
        Kind::Event => {
            if pl.playlist_type.as_deref() != Some("EVENT") {
                p(format!(
                    "PLAYLIST-TYPE {:?}, expected EVENT",
                    pl.playlist_type
                ));
            }
            if pl.endlist {
                p("an open EVENT playlist has ENDLIST".into());
            }
        }
        Kind::Vod => {
            if pl.playlist_type.as_deref() != Some("VOD") {
                p(format!(
                    "PLAYLIST-TYPE {:?}, expected VOD",
                    pl.playlist_type
                ));
            }
            if !pl.endlist {
                p("VOD playlist without ENDLIST (ref 1.2 item 9)".into());
            }
        }
    }
    if kind != Kind::Live && pl.part_target.is_some() {
        p("PART-INF in a VOD/EVENT playlist".into());
    }
    out
}

/// One stored fragment, from the fragments API.
#[derive(Debug, Clone)]
pub struct Frag {
    pub number: i64,
    pub producer_us: i64,
    pub duration_us: i64,
    pub keyframe: bool,
    /// Holds video samples (one moof per track interleaves fragments without).
    pub video: bool,
    pub size: i64,
    pub session: i64,
    pub init: i64,
    /// Recomputed: starts a segment (keyframe, or first after a discontinuity).
    pub segment_start: bool,
    /// Recomputed: a new session, a new init or a time jump > 0.5 s before it.
    pub discontinuity: bool,
    /// Recomputed: the MSN of its segment.
    pub segment_seq: i64,
    /// Recomputed: the discontinuity sequence number.
    pub disc_seq: i64,
}

impl Frag {
    pub fn end_us(&self) -> i64 {
        self.producer_us + self.duration_us
    }
}

/// The stored fragments of a stream with the HLS structure DESIGN.md defines ("Vocabulary":
/// a segment starts at a keyframe fragment, and in a stream with video never at a fragment
/// without video; a new session, a new init or a timestamp jump is a discontinuity),
/// recomputed independently of the server's `segment_seq`/`disc_seq`.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    pub frags: BTreeMap<i64, Frag>,
}

/// The jump in producer time the writer treats as a discontinuity (store/writer.rs).
pub const DISCONTINUITY_GAP_US: i64 = 500_000;

impl Truth {
    pub fn from_rows(rows: &[serde_json::Value]) -> Truth {
        let mut frags = BTreeMap::new();
        let mut prev: Option<Frag> = None;
        // The stream's end so far over all fragments, and whether the current segment has video.
        let mut end_us = i64::MIN;
        let mut segment_has_video = false;
        for r in rows {
            let mut f = Frag {
                number: r["fragment"].as_i64().expect("fragment"),
                producer_us: r["producer_time_us"].as_i64().expect("producer_time_us"),
                duration_us: r["duration_us"].as_i64().expect("duration_us"),
                keyframe: r["keyframe"].as_bool().expect("keyframe"),
                video: r["video"].as_bool().expect("video"),
                size: r["size_bytes"].as_i64().expect("size_bytes"),
                session: r["session"].as_i64().expect("session"),
                init: r["init"].as_i64().expect("init"),
                segment_start: true,
                discontinuity: false,
                segment_seq: 0,
                disc_seq: 0,
            };
            if let Some(p) = &prev {
                // Only a jump forward is a gap: with one moof per track, a fragment of one track
                // starts before the other track's newest fragment ends.
                f.discontinuity = p.session != f.session
                    || p.init != f.init
                    || f.producer_us - end_us > DISCONTINUITY_GAP_US;
                f.segment_start =
                    f.discontinuity || (f.keyframe && (segment_has_video || !f.video));
                f.segment_seq = p.segment_seq + i64::from(f.segment_start);
                f.disc_seq = p.disc_seq + i64::from(f.discontinuity);
            }
            segment_has_video = f.video || (!f.segment_start && segment_has_video);
            end_us = end_us.max(f.end_us());
            prev = Some(f.clone());
            frags.insert(f.number, f);
        }
        Truth { frags }
    }

    /// The fragments of the segment that starts at fragment `first` (as stored so far).
    pub fn segment(&self, first: i64) -> Vec<&Frag> {
        let Some(f) = self.frags.get(&first) else {
            return Vec::new();
        };
        self.frags
            .range(first..)
            .map(|(_, g)| g)
            .take_while(|g| g.segment_seq == f.segment_seq)
            .collect()
    }

    pub fn newest(&self) -> Option<&Frag> {
        self.frags.values().next_back()
    }
}

/// The playlist against the stored rows: every segment names a segment start; MSN and DSN are
/// the ones the rows give; PDT is the producer time of the first fragment (to the ms); EXTINF
/// is the segment's duration; parts are its fragments (duration, INDEPENDENT = keyframe);
/// DISCONTINUITY exactly where a discontinuity is; MAP names the init of the fragments.
pub fn check_against_truth(pl: &MediaPlaylist, truth: &Truth) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = |m: String| out.push(m);
    if let Some(first) = pl.segments.first() {
        if let Some(f) = first.first_fragment().and_then(|n| truth.frags.get(&n)) {
            if pl.media_sequence != Some(f.segment_seq) {
                p(format!(
                    "MEDIA-SEQUENCE {:?}, but the first segment (fragment {}) has MSN {}",
                    pl.media_sequence, f.number, f.segment_seq
                ));
            }
            if pl.disc_sequence != Some(f.disc_seq) {
                p(format!(
                    "DISCONTINUITY-SEQUENCE {:?}, but the first segment (fragment {}) has DSN {}",
                    pl.disc_sequence, f.number, f.disc_seq
                ));
            }
        }
    }
    for (i, s) in pl.segments.iter().enumerate() {
        let Some(n) = s.first_fragment() else {
            p(format!(
                "MSN {}: URI does not name a fragment: {:?}",
                s.msn, s.uri
            ));
            continue;
        };
        let name = format!("segment {n} (MSN {})", s.msn);
        let Some(f) = truth.frags.get(&n) else {
            p(format!("{name}: fragment {n} is not stored"));
            continue;
        };
        if !f.segment_start {
            p(format!(
                "{name}: fragment {n} does not start a segment (not a keyframe)"
            ));
        }
        if s.msn != f.segment_seq {
            p(format!(
                "{name}: MSN {} but the rows give {}",
                s.msn, f.segment_seq
            ));
        }
        if s.dsn != f.disc_seq {
            p(format!(
                "{name}: DSN {} but the rows give {}",
                s.dsn, f.disc_seq
            ));
        }
        if i > 0 && s.discontinuity != f.discontinuity {
            p(format!(
                "{name}: EXT-X-DISCONTINUITY {} but the rows say {} (session {}, init {}) (ref 1.2 item 5)",
                if s.discontinuity { "present" } else { "missing" },
                if f.discontinuity { "discontinuity" } else { "continuous" },
                f.session,
                f.init
            ));
        }
        if let Some(m) = &s.map {
            if init_id(m) != Some(f.init) {
                p(format!(
                    "{name}: MAP {m} but fragment {n} uses init {}",
                    f.init
                ));
            }
        }
        if i > 0 {
            let prev_init = pl.segments[i - 1]
                .first_fragment()
                .and_then(|m| truth.frags.get(&m))
                .map(|g| g.init);
            if prev_init != Some(f.init) && !s.map_here {
                p(format!(
                    "{name}: the init changes but no EXT-X-MAP precedes it"
                ));
            }
        }
        let want_ms = f.producer_us.div_euclid(1000);
        if s.pdt_ms.is_some_and(|ms| ms != want_ms) {
            p(format!(
                "{name}: PROGRAM-DATE-TIME {:?} ms but the stored producer time is {} µs",
                s.pdt_ms, f.producer_us
            ));
        }
        let members = truth.segment(n);
        // A segment lasts as long as its video (its fragments' when it has none).
        let video_end = members.iter().filter(|g| g.video).map(|g| g.end_us()).max();
        let any_end = members.iter().map(|g| g.end_us()).max();
        if let (Some(d), Some(end)) = (s.extinf, video_end.or(any_end)) {
            let want = (end - f.producer_us) as f64 / 1e6;
            if (d - want).abs() > 0.0005 + 1e-9 {
                p(format!(
                    "{name}: EXTINF {d} but its {} stored fragments last {want} s",
                    members.len()
                ));
            }
        }
        if s.uri.is_none() && s.parts.len() != members.len() {
            p(format!(
                "{name}: the open segment lists {} parts but {} fragments are stored",
                s.parts.len(),
                members.len()
            ));
        }
        for (j, part) in s.parts.iter().enumerate() {
            // Parts are named by their fragment alone (a preload hint must name the URI the part
            // is later listed under, before it is known which segment the part joins).
            if part_numbers(&part.uri) != Some((n + j as i64, 0)) {
                p(format!(
                    "{name}: part {j} has URI {} (expected parts/{}.0.m4s)",
                    part.uri,
                    n + j as i64
                ));
                continue;
            }
            let Some(g) = members.get(j) else {
                p(format!(
                    "{name}: part {} is not a fragment of the segment",
                    part.uri
                ));
                continue;
            };
            if (part.duration - g.duration_us as f64 / 1e6).abs() > 0.0005 + 1e-9 {
                p(format!(
                    "{}: DURATION {} but fragment {} lasts {} µs",
                    part.uri, part.duration, g.number, g.duration_us
                ));
            }
            if part.independent != g.keyframe {
                p(format!(
                    "{}: INDEPENDENT={} but fragment {} keyframe={} (ref 2.1 item 2)",
                    part.uri, part.independent, g.number, g.keyframe
                ));
            }
        }
    }
    out
}

/// What the reloads so far showed for an MSN.
#[derive(Debug, Clone)]
struct Seen {
    /// The URI and EXTINF it had when last listed as complete.
    complete: Option<(String, f64, usize)>,
    /// Whether it was complete at its last listing.
    complete_last: bool,
    dsn: i64,
    reload: usize,
}

/// Rules across reloads of one live playlist (ref 1.2 items 1, 3, 4; 2.1 item 6). Each change
/// is reported once (then the new state is the reference).
#[derive(Debug, Default)]
pub struct Tracker {
    reloads: usize,
    media_sequence: Option<i64>,
    disc_sequence: Option<i64>,
    target_duration: Option<i64>,
    segs: HashMap<i64, Seen>,
    parts: HashMap<(i64, usize), (String, f64)>,
    last_part: Option<String>,
    hint: Option<String>,
}

impl Tracker {
    pub fn observe(&mut self, pl: &MediaPlaylist) -> Vec<String> {
        self.reloads += 1;
        let r = self.reloads;
        let mut out = Vec::new();
        let mut p = |m: String| out.push(format!("reload {r}: {m}"));
        if let (Some(a), Some(b)) = (self.media_sequence, pl.media_sequence) {
            if b < a {
                p(format!(
                    "MEDIA-SEQUENCE went back from {a} to {b} (ref 1.2 item 3)"
                ));
            }
        }
        if let (Some(a), Some(b)) = (self.disc_sequence, pl.disc_sequence) {
            if b < a {
                p(format!(
                    "DISCONTINUITY-SEQUENCE went back from {a} to {b} (ref 1.2 item 4)"
                ));
            }
        }
        if let (Some(a), Some(b)) = (self.target_duration, pl.target_duration) {
            if a != b {
                p(format!(
                    "TARGETDURATION changed from {a} to {b} (ref 1.2 item 1: MUST NOT change)"
                ));
            }
        }
        for s in &pl.segments {
            let now = s.uri.clone().zip(s.extinf);
            let seen = self.segs.entry(s.msn).or_insert(Seen {
                complete: None,
                complete_last: false,
                dsn: s.dsn,
                reload: r,
            });
            if seen.dsn != s.dsn {
                p(format!(
                    "MSN {}: DSN {} was {} at reload {} (ref 1.2 item 4)",
                    s.msn, s.dsn, seen.dsn, seen.reload
                ));
            }
            match (&now, &seen.complete) {
                (Some((u, d)), Some((ou, od, at))) if (u, d) != (ou, od) => p(format!(
                    "MSN {}: {u} EXTINF {d} was {ou} EXTINF {od} at reload {at} (ref 1.2 item 3; AVPlayer -12312)",
                    s.msn
                )),
                (None, Some((ou, od, at))) if seen.complete_last => p(format!(
                    "MSN {}: listed as complete ({ou}, EXTINF {od}) at reload {at}, now open again without URI/EXTINF (ref 1.2 item 3)",
                    s.msn
                )),
                _ => {}
            }
            if let Some((u, d)) = now {
                seen.complete = Some((u, d, r));
            }
            seen.complete_last = s.uri.is_some();
            seen.dsn = s.dsn;
            seen.reload = r;
            for (j, part) in s.parts.iter().enumerate() {
                let old = self
                    .parts
                    .insert((s.msn, j), (part.uri.clone(), part.duration));
                if let Some((u, d)) = old {
                    if u != part.uri || d != part.duration {
                        p(format!(
                            "MSN {} part {j}: {} DURATION={} was {u} DURATION={d}",
                            s.msn, part.uri, part.duration
                        ));
                    }
                }
            }
        }
        // A hinted part, once it exists, must be listed under the hinted URI (ref 2.1 item 6).
        let last_part = pl.last_part_uri().map(str::to_string);
        if let Some(hint) = &self.hint {
            if last_part.is_some()
                && last_part != self.last_part
                && !pl.part_uris().any(|u| u == hint)
            {
                p(format!(
                    "the previous PRELOAD-HINT was {hint}, but the part that followed is listed as {:?} (ref 2.1 item 6: the hint URI MUST be the one that later appears in EXT-X-PART)",
                    last_part.as_deref().unwrap_or("")
                ));
            }
        }
        self.last_part = last_part;
        self.hint = pl.hint_uri().map(str::to_string);
        self.media_sequence = pl.media_sequence.or(self.media_sequence);
        self.disc_sequence = pl.disc_sequence.or(self.disc_sequence);
        self.target_duration = pl.target_duration.or(self.target_duration);
        out
    }
}

/// One EXT-X-STREAM-INF entry: its attributes and its URI.
pub type Variant = (BTreeMap<String, String>, String);

/// A multivariant playlist: (problems, STREAM-INF entries).
pub fn parse_master(text: &str) -> (Vec<String>, Vec<Variant>) {
    let mut problems = Vec::new();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    if lines.first() != Some(&"#EXTM3U") {
        problems.push("the first line is not #EXTM3U".to_string());
    }
    let mut variants = Vec::new();
    let mut pending: Option<BTreeMap<String, String>> = None;
    for line in lines.iter().skip(1) {
        if line.is_empty() {
            continue;
        }
        if let Some(v) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            pending = Some(attributes(v));
        } else if line.starts_with("#EXTINF") || line.starts_with("#EXT-X-TARGETDURATION") {
            problems.push(format!(
                "media playlist tag in a multivariant playlist: {line}"
            ));
        } else if !line.starts_with('#') {
            match pending.take() {
                Some(a) => variants.push((a, line.to_string())),
                None => problems.push(format!("URI {line} without EXT-X-STREAM-INF")),
            }
        }
    }
    (problems, variants)
}
