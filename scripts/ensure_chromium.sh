#!/usr/bin/env bash
# The report's browser test renders the page in headless Chromium. Install Debian's chromium
# with apt-get when it is missing and we are root; otherwise say what to install and go on
# (that one test then skips, naming the reason).
set -euo pipefail

command -v chromium >/dev/null 2>&1 && exit 0
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing chromium with apt-get (for the report's headless-browser test) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
    command -v chromium >/dev/null 2>&1 && exit 0
    echo "chromium was installed but is not on PATH." >&2
    exit 1
fi
echo "chromium is not installed: the report's browser test will skip." >&2
echo "Install it (Debian/Ubuntu: sudo apt-get install chromium) to run that test." >&2
exit 0
