#!/usr/bin/python3
"""A real RTSP server for tapedeck's tests and bench: GStreamer's RTSP server through GI.

Mounts (all 25 fps test pictures with a keyframe every GOP frames):
  /h264      H.264 + AAC
  /h265      H.265
  /secure    H.264 + AAC behind Basic auth (--user/--password); anonymous gets 401
  /video     H.264 only

--stats FILE is rewritten every 100 ms with {"clients": K, "mounts": {"<mount>": {"frames": N}}}:
the RTSP connections open now, and per mount the video frames handed to the network since its
media was made (what the tests compare the archive with). Prints "ready <port>" once listening. Runs until killed.
"""
import argparse
import json
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

FPS = 25


def video(enc, gop, width, height, kbit):
    caps = f"video/x-raw,width={width},height={height},framerate={FPS}/1"
    src = f"videotestsrc is-live=true pattern=ball ! {caps} ! timeoverlay ! "
    if enc == "h265":
        return src + (
            # Closed GOPs (IDR keyframes), as cameras send: retina (and so tapedeck) takes only
            # IDR pictures as keyframes, not x265's default open-GOP CRA pictures.
            f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbit} "
            "option-string=open-gop=0 "
            "! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    return src + (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbit} "
        "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=-1"
    )


AUDIO = (
    " audiotestsrc is-live=true wave=sine volume=0.2 ! audio/x-raw,rate=48000,channels=1 "
    "! avenc_aac ! rtpmp4gpay name=pay1 pt=97"
)


class Stats:
    def __init__(self, path):
        self.path = path
        self.mounts = {}
        self.clients = 0
        if path:
            GLib.timeout_add(100, self.write)

    def write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"clients": self.clients, "mounts": self.mounts}, f)
        os.replace(tmp, self.path)
        return True


def make_factory(launch, mount, stats, shared):
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {launch} )")
    factory.set_shared(shared)
    entry = stats.mounts.setdefault(mount, {"frames": 0})

    def on_configure(_factory, media):
        entry["frames"] = 0
        pay = media.get_element().get_by_name("pay0")

        def count(_pad, info):
            buf = info.get_buffer()
            # One frame per marker bit would need RTP parsing; the payloader's sink pad sees
            # one buffer per encoded frame.
            if buf is not None:
                entry["frames"] += 1
            return Gst.PadProbeReturn.OK

        pay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, count)

    factory.connect("media-configure", on_configure)
    return factory


def permissions(anonymous_plays):
    perms = GstRtspServer.RTSPPermissions.new()
    for role, plays in (("user", True), ("anonymous", anonymous_plays)):
        perms.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role(role, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, plays)
    return perms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--gop", type=int, default=50, help="keyframe interval in frames")
    p.add_argument("--size", default="320x240")
    p.add_argument("--bitrate", type=int, default=400, help="video kbit/s")
    p.add_argument("--user", default="camera")
    p.add_argument("--password", default="secret")
    p.add_argument("--stats", default=None)
    p.add_argument("--shared", action="store_true", help="one pipeline per mount for all clients")
    a = p.parse_args()
    width, height = (int(x) for x in a.size.split("x"))
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    stats = Stats(a.stats)
    mounts = server.get_mount_points()
    h264 = video("h264", a.gop, width, height, a.bitrate)
    # Basic auth on /secure: the user may see and play it; anonymous may see it but not play
    # it, which is what makes the server answer 401 with a challenge (not 404). With an auth
    # set, every mount needs permissions: the open ones let both roles play.
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken.new()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
    anon = GstRtspServer.RTSPToken.new()
    anon.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "anonymous")
    auth.set_default_token(anon)
    server.set_auth(auth)
    factories = {
        "/h264": (h264 + AUDIO, True),
        "/video": (h264, True),
        "/h265": (video("h265", a.gop, width, height, a.bitrate), True),
        "/secure": (h264 + AUDIO, False),
    }
    for mount, (launch, anonymous_plays) in factories.items():
        factory = make_factory(launch, mount, stats, a.shared)
        factory.set_permissions(permissions(anonymous_plays))
        mounts.add_factory(mount, factory)
    def on_client(_server, client):
        stats.clients += 1

        def on_closed(_client):
            stats.clients -= 1

        client.connect("closed", on_closed)

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{a.port}", file=sys.stderr)
        sys.exit(1)
    print(f"ready {a.port}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
