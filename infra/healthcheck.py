"""Container health check: GET one URL of the process in this container, healthy on a 2xx.

Used by the image's HEALTHCHECK for every service; each service says what to ask through
HEALTHCHECK_URL (compose sets it per service; Kubernetes uses its own probes instead):

* web: http://127.0.0.1:8080/healthz
* webhook intake (`pagemill ingest --webhook`): http://127.0.0.1:8087/healthz
* workers, beat and the SQS intake: their Prometheus endpoint, the default
  http://127.0.0.1:9808/metrics (PAGEMILL_METRICS_PORT)

Standard library only and no pagemill import, so a check costs milliseconds, not the pipeline's
start-up.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9808/metrics"


def main() -> int:
    url = os.environ.get("HEALTHCHECK_URL") or DEFAULT_URL
    if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        print(f"unhealthy: HEALTHCHECK_URL must be local, got {url}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300:
        return 0
    print(f"unhealthy: {url} answered {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
