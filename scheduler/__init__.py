"""The scheduler process: leader election (`leader`), the job table (`jobs`), `process.run()`.

Its jobs only enqueue Dramatiq actors; the workers do the work.
"""
