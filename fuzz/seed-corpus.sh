#!/usr/bin/env bash
# Builds the seed corpora the fuzz targets start from:
#   fuzz/corpus/splitter/    pieces of samples/*.mp4 (inits, first fragments), each behind the
#                            two chunking bytes the splitter target reads first
#   fuzz/corpus/query_time/  times, follow-feed starts, byte ranges and paths as the API takes them
#   fuzz/corpus/h264_plan/   the first frames of the H.264 samples as Annex B, behind the byte
#                            that picks the wanted frame (needs ffmpeg; skipped without it)
# Safe to rerun: it only (re)writes its own seed-* files and leaves what libFuzzer added.
# Why derived rather than whole samples: libFuzzer runs fastest on small inputs, and whole
# samples are up to 466 KB of mostly mdat payload the splitter never looks into.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
samples="$here/../samples"
splitter="$here/corpus/splitter"
query_time="$here/corpus/query_time"
h264_plan="$here/corpus/h264_plan"
mkdir -p "$splitter" "$query_time" "$h264_plan"

# Big-endian u32 at byte offset $2 of file $1.
be32() { od -An -tu4 --endian=big -j "$2" -N4 "$1" | tr -d ' \n'; }
# Bytes [$2, $2+$3) of file $1.
slice() { dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=64K status=none; }
# A big-endian u32 as raw bytes.
u32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }

# Fragments bigger than this keep only the start of their mdat payload (the splitter does not
# read it; fragment facts then stop at the data-offset check, which other seeds get past).
FULL_FRAGMENT_LIMIT=20000
KEPT_PAYLOAD=64

# Chunking prefixes: one push, byte by byte, 8-byte chunks, pseudo-random chunks.
prefixes=('\x00\x00' '\x01\x00' '\x02\x07' '\x03\x2a')

n=0
for mp4 in "$samples"/*.mp4; do
  name=$(basename "$mp4" .mp4)
  len=$(stat -c %s "$mp4")
  # Top-level boxes: offsets, sizes, types. The samples use 32-bit sizes only.
  offsets=() sizes=() types=()
  at=0
  while ((at < len)); do
    size=$(be32 "$mp4" "$at")
    offsets+=("$at") sizes+=("$size") types+=("$(slice "$mp4" $((at + 4)) 4)")
    at=$((at + size))
  done
  # The init: everything before the first prft/moof/mdat.
  i=0
  while ((i < ${#types[@]})) && [[ ! ${types[i]} =~ ^(prft|moof|mdat)$ ]]; do i=$((i + 1)); done
  init_end=${offsets[i]:-$len}
  # The first unit after it: optional prft, moof (or a progressive file's free/mdat), mdat.
  j=$i
  while ((j < ${#types[@]})) && [[ ${types[j]} != mdat ]]; do j=$((j + 1)); done
  prefix=${prefixes[n % ${#prefixes[@]}]}
  n=$((n + 1))
  { printf "$prefix"; slice "$mp4" 0 "$init_end"; } >"$splitter/seed-$name-init"
  ((j < ${#types[@]})) || continue
  mdat_at=${offsets[j]} mdat_size=${sizes[j]}
  {
    printf "$prefix"
    slice "$mp4" 0 "$mdat_at"
    if ((mdat_at + mdat_size - init_end <= FULL_FRAGMENT_LIMIT)); then
      slice "$mp4" "$mdat_at" "$mdat_size"
    else
      u32 $((8 + KEPT_PAYLOAD))
      printf mdat
      slice "$mp4" $((mdat_at + 8)) "$KEPT_PAYLOAD"
    fi
  } >"$splitter/seed-$name-first"
done

# One line per seed file: what the README and DESIGN show a client sending.
i=0
while IFS= read -r line; do
  printf %s "$line" >"$query_time/seed-$i"
  i=$((i + 1))
done <<'EOF'
2026-11-25T17:00:00Z
2026-11-25T17:00:00.5+01:00
2026-11-25T16:00:00.123456Z
1970-01-01T00:00:00Z
1764090000000
-1
0
now
earliest
after:0
after:42
bytes=0-99
bytes=100-
bytes=-500
bytes=0-0,5-9
/api/v1/streams/cam1/hls/live.m3u8
/api/v1/streams/cam%201/ingest
/api/v1/streams/cam1/playback-tokens
/metrics
EOF

# H.264 planner: 9 and 14 frames of each sample with B-pyramids, wanting frames 8 and 13.
if command -v ffmpeg >/dev/null 2>&1; then
  for name in h264_aac_gop2s h264_cavlc h264_refs4; do
    for frames in 9 14; do
      { printf "\\x$(printf %02x $((frames - 1)))"
        ffmpeg -hide_banner -loglevel error -i "$samples/$name.mp4" -map 0:v -c copy \
          -bsf:v h264_mp4toannexb -frames:v "$frames" -f h264 -
      } >"$h264_plan/seed-$name-$frames"
    done
  done
else
  echo "ffmpeg not found: no h264_plan seeds"
fi

echo "corpus: $(ls "$splitter" | wc -l) splitter ($(du -sh "$splitter" | cut -f1)), $(ls "$query_time" | wc -l) query_time, $(ls "$h264_plan" | wc -l) h264_plan"
