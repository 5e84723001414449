"""Request counts per API key in fixed one-minute windows (Redis), for the API's rate limit.

One key per API key × window, `INCR` then `EXPIRE` in one round trip: the count of the current
window, and nothing left behind once it has passed.
"""

from __future__ import annotations

from storage.redis_client import get_redis

WINDOW_S = 60


def count_request(key_id: str, now_s: float) -> tuple[int, int]:
    """Count one request of `key_id` at `now_s` (Unix seconds): (requests in this window so
    far, whole seconds until the window ends)."""
    window = int(now_s) // WINDOW_S
    name = f"meterline:ratelimit:{{{key_id}}}:{window}"
    pipe = get_redis().pipeline(transaction=False)
    pipe.incr(name)
    pipe.expire(name, WINDOW_S * 2)
    count, _ = pipe.execute()
    return int(count), (window + 1) * WINDOW_S - int(now_s)
