#!/usr/bin/env python3
"""Per-second motion score of a tapedeck stream, from its follow feed.

Follows GET /api/v1/streams/<stream>/media (a continuous fMP4 feed that catches up from the
archive and then follows live), lets ffmpeg decode it to small grey frames, and prints one line
per second of video:

    second=3 time=2026-11-25T17:00:03Z motion=4.27

`motion` is the mean absolute difference between consecutive frames (0-255 grey levels), averaged
over the second. Needs only Python 3 and ffmpeg. Run `python3 motion.py --help`.
"""

import argparse
import datetime
import json
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

WIDTH, HEIGHT, FPS = 64, 36, 5
FRAME_BYTES = WIDTH * HEIGHT


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="http://127.0.0.1:8080", help="tapedeck base URL")
    p.add_argument("--stream", required=True, help="stream name")
    p.add_argument("--start", default="now",
                   help="now, earliest, after:<fragment> or a time (RFC 3339 or epoch ms)")
    p.add_argument("--seconds", type=int, default=0,
                   help="stop after this many seconds of video (0: follow forever)")
    p.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg binary")
    args = p.parse_args()

    base = f"{args.server.rstrip('/')}/api/v1/streams/{urllib.parse.quote(args.stream)}"
    query = urllib.parse.urlencode({"start": args.start})
    feed = urllib.request.urlopen(f"{base}/media?{query}")
    # The feed starts at this fragment; its producer time labels the seconds we print.
    first = int(feed.headers["X-Tapedeck-First-Fragment"])
    started = datetime.datetime.now(datetime.timezone.utc)
    with urllib.request.urlopen(f"{base}/fragments?after={first - 1}&limit=1") as r:
        rows = json.load(r)["fragments"]
    if rows:
        started = datetime.datetime.fromtimestamp(rows[0]["producer_time_us"] / 1e6,
                                                  datetime.timezone.utc)
    decoder = subprocess.Popen(
        [args.ffmpeg, "-hide_banner", "-loglevel", "error", "-i", "-",
         "-vf", f"fps={FPS},scale={WIDTH}:{HEIGHT},format=gray",
         "-f", "rawvideo", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )

    def pump() -> None:
        try:
            # read1: whatever has arrived, so a quiet live stream is passed on at once.
            while chunk := feed.read1(64 * 1024):
                decoder.stdin.write(chunk)
                decoder.stdin.flush()
        except (OSError, ValueError):
            pass  # the decoder went away: we are done
        finally:
            try:
                decoder.stdin.close()
            except OSError:
                pass

    threading.Thread(target=pump, daemon=True).start()
    previous = None
    diffs = []
    second = 0
    try:
        while True:
            frame = decoder.stdout.read(FRAME_BYTES)
            if len(frame) < FRAME_BYTES:
                break
            if previous is not None:
                diffs.append(sum(abs(a - b) for a, b in zip(frame, previous)) / FRAME_BYTES)
            previous = frame
            if len(diffs) == FPS:
                when = started + datetime.timedelta(seconds=second)
                score = sum(diffs) / len(diffs)
                print(f"second={second} time={when:%Y-%m-%dT%H:%M:%S.%f}Z motion={score:.2f}",
                      flush=True)
                diffs = []
                second += 1
                if args.seconds and second >= args.seconds:
                    break
    finally:
        decoder.kill()
        decoder.wait()
        feed.close()
    return 0 if second > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
