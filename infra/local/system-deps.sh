#!/usr/bin/env bash
# Debian packages the pipeline needs at run time (OCR) and the tests use (compose validation,
# the dashboard's browser tests, the Prometheus scrape test).
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
