"""gunicorn settings for a web app that records usage with Meterline:

    gunicorn -c examples/gunicorn.conf.py myapp:app

Each worker sends the events it has buffered when it exits (`worker_exit` runs on a graceful
stop, a quick stop, a timed-out worker and `max_requests`), after its requests in flight have
finished. Only gunicorn's SIGKILL, once `graceful_timeout` has passed, skips it.
"""

from tasks.shutdown import gunicorn_worker_exit as worker_exit  # noqa: F401

# Seconds a stopping worker gets to finish its requests and send its events before SIGKILL.
# Keep it below the platform's own stop timeout (Kubernetes' terminationGracePeriodSeconds,
# 30 s by default; `docker stop -t`, 10 s by default).
graceful_timeout = 25
