"""`broadcaster healthcheck`: the container's HEALTHCHECK. One image runs `api` and
`dispatcher`; the check asks the port this process serves: the dispatcher's metrics port where
one is set (BROADCASTER_METRICS_PORT), the API's port otherwise. Needs no database."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from broadcaster.settings import Settings

TIMEOUT_SECONDS = 3.0


def target(settings: Settings) -> str:
    """The URL the check asks: /healthz on the metrics port, or on the API port."""
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = settings.metrics_port or settings.port
    return f"http://{host}:{port}/healthz"


def probe(settings: Settings) -> int:
    """0 when the process answers 200 within the timeout; otherwise one line and 1."""
    url = target(settings)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as answer:
            if answer.status == 200:
                return 0
            reason = f"answered {answer.status}"
    except urllib.error.HTTPError as exc:
        reason = f"answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    print(f"broadcaster: unhealthy: {url} {reason}", file=sys.stderr)
    return 1
