"""The scheduler process: the job table (`jobs`) and `process.run()`; its leader election is
`storage.leader_lock` (a PostgreSQL advisory lock).

Its jobs only enqueue Dramatiq actors; the workers do the work.
"""
