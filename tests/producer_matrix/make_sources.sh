#!/usr/bin/env bash
# Makes the source media of the producer conformance matrix (tests/producer_matrix.rs) in the
# directory given, with ffmpeg's own encoders, at test time: nothing large is committed.
# 6 s each, 320x240 at 25 fps, a keyframe every second, AAC-LC 48 kHz mono.
set -euo pipefail
out="$1"
mkdir -p "$out"
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
video=(-f lavfi -i "testsrc2=size=320x240:rate=25")
audio=(-f lavfi -i "sine=frequency=440:sample_rate=48000")
x264=(-c:v libx264 -preset veryfast -pix_fmt yuv420p -g 25 -keyint_min 25 -sc_threshold 0)
aac=(-c:a aac -b:a 64k)
# H.264 + AAC, no B-frames.
ff "${video[@]}" "${audio[@]}" -t 6 "${x264[@]}" -bf 0 "${aac[@]}" "$out/h264_aac.mp4"
# H.264 with three B-frames + AAC.
ff "${video[@]}" "${audio[@]}" -t 6 "${x264[@]}" -bf 3 "${aac[@]}" "$out/h264_bf3_aac.mp4"
# AAC only.
ff "${audio[@]}" -t 6 "${aac[@]}" "$out/aac.mp4"
# H.265 + AAC.
ff "${video[@]}" "${audio[@]}" -t 6 -c:v libx265 -preset ultrafast -pix_fmt yuv420p \
  -x265-params "keyint=25:min-keyint=25:scenecut=0:log-level=error" -tag:v hvc1 "${aac[@]}" \
  "$out/h265_aac.mp4"
# H.264 only.
ff "${video[@]}" -t 6 "${x264[@]}" -bf 0 "$out/h264.mp4"
