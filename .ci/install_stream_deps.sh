#!/usr/bin/env bash
# The stream tests' RTSP server: GStreamer's RTSP server, run by Debian's /usr/bin/python3 (which has gi).
# See tests/rtsp_server.py and DESIGN.md ("Checked on these machines"). Needs root (or sudo) and apt-get.
# Without these packages tests/test_stream_rtsp.py skips locally and fails under CI=true.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
    python3-gi gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" \
    && echo "stream deps: GStreamer RTSP server ready"
