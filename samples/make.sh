#!/usr/bin/env bash
# Regenerates the media samples in this folder from ffmpeg's synthetic sources (testsrc2 + sine),
# so every file is reproducible and free of third-party content. Needs ffmpeg with libx264, libx265
# and the native aac encoder (Debian's ffmpeg has all three). Run from anywhere:
#   bash samples/make.sh
set -euo pipefail
cd "$(dirname "$0")"

FF=(ffmpeg -hide_banner -loglevel error -y)
# Fragmented MP4 as a camera or `ffmpeg -f mp4 -method PUT` would send it.
FRAG=(-movflags frag_keyframe+empty_moov+default_base_moof)
VIDEO_SRC=(-f lavfi -i "testsrc2=size=640x360:rate=25")
AUDIO_SRC=(-f lavfi -i "sine=frequency=440:sample_rate=48000")
# 2 s GOPs at 25 fps, no scene-cut keyframes, so fragment boundaries are predictable.
X264=(-c:v libx264 -preset veryfast -pix_fmt yuv420p -profile:v high -b:v 300k -g 50 -keyint_min 50 -sc_threshold 0)
AAC=(-c:a aac -b:a 64k -ac 2)

# 1. H.264 + AAC, 10 s, 2 s GOPs: one fragment per keyframe (5 fragments).
"${FF[@]}" "${VIDEO_SRC[@]}" "${AUDIO_SRC[@]}" -t 10 "${X264[@]}" "${AAC[@]}" "${FRAG[@]}" h264_aac_gop2s.mp4

# 2. H.264 only, 10 s, 2 s GOPs cut into 0.5 s CMAF chunks: 3 of every 4 fragments start without
#    a keyframe (LL-HLS parts).
"${FF[@]}" "${VIDEO_SRC[@]}" -t 10 "${X264[@]}" -frag_duration 500000 \
  -movflags frag_keyframe+empty_moov+default_base_moof+cmaf h264_cmaf_chunks.mp4

# 3. H.265 (hvc1 sample entry, as Apple requires) + AAC, 6 s, 2 s GOPs.
"${FF[@]}" "${VIDEO_SRC[@]}" "${AUDIO_SRC[@]}" -t 6 -c:v libx265 -preset ultrafast -pix_fmt yuv420p \
  -x265-params "keyint=50:min-keyint=50:scenecut=0:log-level=error" -b:v 300k -tag:v hvc1 \
  "${AAC[@]}" "${FRAG[@]}" h265_aac.mp4

# 4. Audio only (AAC), 10 s, 1 s fragments (audio has no keyframes, so fragments are cut by time).
"${FF[@]}" "${AUDIO_SRC[@]}" -t 10 "${AAC[@]}" -frag_duration 1000000 \
  -movflags empty_moov+default_base_moof aac_only.mp4

# 5. H.264 + AAC, 4 s, with a `prft` (producer reference time) box before every fragment.
"${FF[@]}" "${VIDEO_SRC[@]}" "${AUDIO_SRC[@]}" -t 4 "${X264[@]}" "${AAC[@]}" "${FRAG[@]}" \
  -write_prft wallclock h264_prft.mp4

# 6. A progressive (not fragmented) MP4: ingest must refuse it with 415.
"${FF[@]}" "${VIDEO_SRC[@]}" -t 2 "${X264[@]}" -movflags +faststart h264_progressive.mp4

# 7. H.264, 4 s, 2 s GOPs, x264's `medium` preset with 4 reference frames: P-pictures may use B
#    references, and weighted prediction repeats a reference in the lists (frame decoding must
#    keep what is referenced).
"${FF[@]}" "${VIDEO_SRC[@]}" -t 4 -c:v libx264 -preset medium -refs 4 -pix_fmt yuv420p \
  -profile:v high -b:v 300k -g 50 -keyint_min 50 -sc_threshold 0 "${FRAG[@]}" h264_refs4.mp4

# 8. H.264 Main with CAVLC entropy coding (slice data not byte-aligned), 320x180, 4 s, 2 s GOPs.
"${FF[@]}" -f lavfi -i "testsrc2=size=320x180:rate=25" -t 4 -c:v libx264 -preset veryfast -coder 0 \
  -profile:v main -pix_fmt yuv420p -b:v 200k -g 50 -keyint_min 50 -sc_threshold 0 "${FRAG[@]}" \
  h264_cavlc.mp4

ls -l ./*.mp4
