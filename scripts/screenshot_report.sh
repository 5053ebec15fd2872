#!/usr/bin/env bash
# Render a datagen HTML report in headless Chromium: save a screenshot and check, from the DOM
# after load, that every plot rendered and no script failed.
#
#   scripts/screenshot_report.sh REPORT.html [SHOT.png] [WIDTHxHEIGHT]
#
# Prints "plots=N expected=M errors=..." and exits non-zero when N != M or a script error was
# recorded (the report's own script writes these as data-* attributes on <body>). Needs Debian's
# chromium: apt-get update && apt-get install -y chromium
# Everything runs offline: the report inlines plotly.js, and Chromium's background networking,
# component updates and sync are switched off.
set -euo pipefail
report=$(realpath "${1:?usage: $0 REPORT.html [SHOT.png] [WIDTHxHEIGHT]}")
shot=${2:-${report%.html}.png}
size=${3:-1280x2000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 3; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$profile"
       --virtual-time-budget=10000)
"$browser" "${flags[@]}" --screenshot="$shot" --window-size="${size/x/,}" "file://$report" \
    >/dev/null 2>&1
dom=$("$browser" "${flags[@]}" --dump-dom "file://$report" 2>/dev/null)
attr() { { grep -o "data-$1=\"[^\"]*\"" <<<"$dom" || true; } | head -1 | cut -d'"' -f2; }
plots=$(attr plots); expected=$(attr expected); errors=$(attr errors)
svgs=$({ grep -o 'class="main-svg"' <<<"$dom" || true; } | wc -l)
echo "plots=${plots:-0} expected=${expected:-?} main-svg=$svgs errors=${errors:-none} shot=$shot"
[ -n "$expected" ] && [ "${plots:-0}" = "$expected" ] && [ -z "$errors" ]
