#!/bin/sh
# System tools some tests drive, from Debian's packages: headless Chromium
# (tests/integration/test_pages.py), poppler-utils' pdftoppm and pdftotext
# (tests/integration/test_month_close.py) and Prometheus
# (tests/integration/test_prometheus.py). Nothing to do when they are there;
# without root or apt-get it says so and those tests skip (under CI they fail).
set -u
missing=""
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="chromium"
command -v pdftoppm >/dev/null 2>&1 || missing="$missing poppler-utils"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-tools: missing$missing, and no root apt-get to install it; those tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# No package may start its service here (Prometheus' would listen on every
# interface): the tests start their own, on loopback and private data.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    guard=yes
fi
install() {  # $1: apt-get options; the rest: packages
    opts=$1; shift
    echo "install-tools: installing $* from Debian's packages" >&2
    # shellcheck disable=SC2086 # the options are meant to split
    apt-get install -y -q $opts "$@" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $opts "$@" >/dev/null; } \
        || echo "install-tools: apt-get could not install $*; those tests will skip" >&2
}
browser=""
for p in $missing; do [ "$p" = prometheus ] || browser="$browser $p"; done
# shellcheck disable=SC2086 # the list is meant to split
[ -n "$browser" ] && install "" $browser
# Without recommends: Prometheus would bring its node exporter, and more.
case "$missing" in *prometheus*) install --no-install-recommends prometheus ;; esac
[ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
exit 0
