#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs them.
#   tools/test.sh            the default suite (slow/soak tests left out)
#   tools/test.sh -m slow    only the slow ones; any pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# ffmpeg streams a real UDP source in tests, mosquitto is the real broker for MQTT tests.
need=()
for tool in ffmpeg mosquitto socat; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "tools/test.sh: installing ${need[*]} with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "tools/test.sh: ${need[*]} not found; the tests that need them will be skipped" \
         "(install with: sudo apt-get install ${need[*]})" >&2
  fi
fi

"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
exec "$PY" -m pytest "$@"
