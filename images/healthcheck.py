"""The images' HEALTHCHECK: GET http://127.0.0.1:<port><path>, exit 0 on a 2xx answer, 1 otherwise.

    python3 healthcheck.py PORT_VARIABLE DEFAULT_PORT PATH

The port is read from the variable the command itself reads (KINFER_SERVE_PORT, ...), else the
default the image's CMD uses. Standard library only; no curl in the images. Kubernetes ignores
HEALTHCHECK (the chart and the operator set probes); podman and docker run it.
"""

import os
import sys
import urllib.request

variable, default, path = sys.argv[1:4]
url = f"http://127.0.0.1:{os.environ.get(variable) or default}{path}"
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except Exception as exc:  # any failure is "unhealthy", said on stderr for `podman healthcheck run`
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
