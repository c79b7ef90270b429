#!/usr/bin/env bash
# Debian packages the pipeline needs at run time (Tesseract's language data; the engine itself
# is the tesserocr wheel) and the tests and benchmarks use: the tesseract command (bench.ocr's
# baseline), docker-compose to validate the compose file, a one-node Ceph (radosgw) as a real
# S3 server that pushes bucket events, Chromium for the dashboard's browser tests, Prometheus
# for the scrape test.
set -euo pipefail
need=()
command -v tesseract >/dev/null || need+=(tesseract-ocr)
for lang in deu fra nld; do
  [ -n "$(find /usr/share -path '*tessdata*' -name "$lang.traineddata" 2>/dev/null | head -1)" ] \
    || need+=("tesseract-ocr-$lang")
done
command -v docker-compose >/dev/null || need+=(docker-compose)
# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads one here).
command -v chromium >/dev/null || need+=(chromium)
# The metrics test scrapes the workers with a real Prometheus (run by the test, not systemd).
command -v prometheus >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Best effort: where Ceph cannot be installed, its end-to-end test skips and says why.
ceph=()
for binary in radosgw ceph-mon ceph-osd; do
  command -v "$binary" >/dev/null || ceph+=("$binary")
done
if [ ${#ceph[@]} -gt 0 ]; then
  echo "installing Debian packages: ${ceph[*]} (a one-node S3 server for the tests, ~1 min)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  { $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${ceph[@]}" >/dev/null; } \
    || echo "warning: could not install ${ceph[*]}; the radosgw end-to-end test will be skipped" >&2
fi
