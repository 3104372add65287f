#!/bin/sh
# System tools some tests drive, from Debian's packages: headless Chromium
# (tests/integration/test_pages.py) and poppler-utils' pdftoppm and pdftotext
# (tests/integration/test_month_close.py). Nothing to do when they are there;
# without root or apt-get it says so and those tests skip (under CI they fail).
set -u
missing=""
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="chromium"
command -v pdftoppm >/dev/null 2>&1 || missing="$missing poppler-utils"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: missing$missing, and no root apt-get to install it; those tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-tools: installing$missing from Debian's packages" >&2
# shellcheck disable=SC2086 # the list is meant to split
apt-get install -y -q $missing >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $missing >/dev/null; } \
    || echo "install-tools: apt-get could not install$missing; those tests will skip" >&2
exit 0
