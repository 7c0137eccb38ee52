#!/usr/bin/env bash
# The alert tests' real services: Debian's Mosquitto broker (MQTT delivery, mosquitto_passwd for the
# password test), headless Chromium (the status page test) and openssl (the MQTT TLS test's throwaway CA).
# See tests/services.py. Needs root (or sudo) and apt-get. Without them those tests skip locally and fail
# under CI=true.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends mosquitto chromium openssl fonts-dejavu-core
# `mosquitto -h` exits 3 by design: check the binary runs and print its version line only.
test -x /usr/sbin/mosquitto && command -v mosquitto_passwd >/dev/null
{ /usr/sbin/mosquitto -h || true; } | head -1
chromium --version 2>/dev/null || /usr/bin/chromium --version
echo "alert deps: mosquitto and chromium ready"
