#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing: `apt-get update` once, then
# `apt-get install`. Called by `make test` (and so by .ci/run); a no-op where all are present.
#   nginx     the path-filtering proxy in front of the SuperLink (launcher/proxy.py, tests/e2e)
#   envsubst  renders the proxy's template as the nginx image does (tests/unit/test_proxy.py; gettext-base)
#   chromium  the real browser the web view's tests drive through Playwright (tests/e2e)
set -euo pipefail

# command-on-PATH:debian-package
NEEDED=(nginx:nginx envsubst:gettext-base chromium:chromium)

missing=()
for pair in "${NEEDED[@]}"; do
  cmd=${pair%%:*} pkg=${pair##*:}
  PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n); else
  echo "system-deps: missing Debian packages ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts nginx as a service on install where it can; the tests run their own on free ports.
if command -v service >/dev/null 2>&1; then "${SUDO[@]}" service nginx stop >/dev/null 2>&1 || true; fi
