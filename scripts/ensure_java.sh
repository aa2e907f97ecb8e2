#!/usr/bin/env bash
# Spark 4 needs Java 17 or newer. Install OpenJDK 17 with apt-get when it is missing and we
# are root; otherwise say exactly what to install and stop.
set -euo pipefail

java_major() {
    local java_bin="java"
    [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]] && java_bin="$JAVA_HOME/bin/java"
    command -v "$java_bin" >/dev/null 2>&1 || { echo 0; return; }
    "$java_bin" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

major="$(java_major)"
if [[ "${major:-0}" -ge 17 ]]; then
    exit 0
fi
echo "Java 17+ is required by Spark 4 (found: ${major:-none})." >&2
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing openjdk-17-jre-headless with apt-get ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    major="$(java_major)"
    [[ "${major:-0}" -ge 17 ]] && exit 0
    echo "openjdk-17-jre-headless was installed but 'java' is still not 17+; set JAVA_HOME." >&2
    exit 1
fi
echo "Install a Java 17+ runtime (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless;" >&2
echo "macOS: brew install openjdk@17) and make sure 'java' is on PATH or JAVA_HOME is set." >&2
exit 1
