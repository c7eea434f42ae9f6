#!/usr/bin/env bash
# Headless Chromium for the HTML report's screenshot test. Debian's package, installed with
# apt-get when this user can (root, or passwordless sudo); otherwise one line says what to install
# and the test that needs it is skipped with the same advice.
set -u
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null 2>&1 && exit 0
done
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  fi
  if [ "$SUDO" != "none" ]; then
    $SUDO apt-get update -qq >/dev/null && \
      $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null && exit 0
  fi
fi
echo "xaiseg: no Chromium found and it could not be installed here; install it (Debian/Ubuntu: 'sudo apt-get install chromium') to run the HTML report screenshot test" >&2
exit 0
