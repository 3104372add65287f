#!/bin/sh
# Headless Chromium for the browser tests (tests/integration/test_pages.py),
# from Debian's packages. Nothing to do when it is already there; without
# root or apt-get it says so and the browser tests skip (they fail under CI).
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no chromium, and no root apt-get to install it; browser tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-browser: installing Debian's chromium" >&2
apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; } \
    || echo "install-browser: apt-get could not install chromium; browser tests will skip" >&2
exit 0
