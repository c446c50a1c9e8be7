#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real programs:
#   chromium   the web page test (Playwright cannot download a browser here)
#   ceph-*     a throwaway single-node Ceph cluster with RADOS Gateway, the
#              real S3 engine of tests/engines (see devtools/rgw.py)
# Idempotent and quiet: a no-op when everything is installed. Without root or
# apt-get it only says what is missing and exits 0; the tests that need the
# packages then skip and say why (CI, which runs as root, installs them).
set -euo pipefail

BROWSER=(chromium)
# No ceph-mgr: devtools/rgw.py does without it (it only serves `ceph -s`).
CEPH=(ceph-mon ceph-osd radosgw ceph-common)

missing() {
    local name
    for name in "$@"; do
        dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'install ok installed' || echo "$name"
    done
}

mapfile -t browser < <(missing "${BROWSER[@]}")
mapfile -t ceph < <(missing "${CEPH[@]}")
all=("${browser[@]}" "${ceph[@]}")
if [ ${#all[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: not installed (needs root and apt-get): ${all[*]}" >&2
    echo "system-deps: the tests that need them will be skipped" >&2
    exit 0
fi

# Package scripts start their daemons (ceph-mon, radosgw, ...) through
# invoke-rc.d / deb-systemd-invoke; a policy-rc.d that exits 101 ("action
# forbidden") keeps them stopped. Any policy already in place is put back.
POLICY=/usr/sbin/policy-rc.d
saved=""
if [ -e "$POLICY" ]; then
    saved=$(mktemp)
    cp -p "$POLICY" "$saved"
fi
restore_policy() {
    if [ -n "$saved" ]; then mv -f "$saved" "$POLICY"; else rm -f "$POLICY"; fi
}
trap restore_policy EXIT
trap 'exit 130' INT TERM
printf '#!/bin/sh\n# devtools/system-deps.sh: start no daemon while installing\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

export DEBIAN_FRONTEND=noninteractive
# Wait for another session's apt rather than fail on its lock.
APT=(apt-get -qq -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
# Package scripts chatter on stderr even with -qq: keep it, show it on failure.
log=$(mktemp)
trap 'restore_policy; rm -f "$log"' EXIT
run() {
    if ! "$@" >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "system-deps: failed: $*" >&2
        exit 1
    fi
}
echo "system-deps: running as root, so installing Debian packages with apt-get for the" \
    "browser and Ceph RGW tests (once; a few minutes): ${all[*]}" >&2
run "${APT[@]}" update
if [ ${#browser[@]} -gt 0 ]; then
    # With its recommends (fonts), as a user's browser has them.
    run "${APT[@]}" install "${browser[@]}"
fi
if [ ${#ceph[@]} -gt 0 ]; then
    run "${APT[@]}" install --no-install-recommends "${ceph[@]}"
fi
