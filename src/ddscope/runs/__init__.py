"""Running a sweep: the store, the driver, executors, heartbeats, progress, status, loggers.

The sweep as a function is :func:`ddscope.sweep` (:mod:`ddscope.api`), which drives these."""
