"""Cohort runs: case lists, shards, resume records, interruption, executors, manifests.

``xaimed.pipeline`` explains one case at a time; this package decides which cases a process
takes (``shard``), what is already done (``records``), how the work is spread over processes,
devices or a Dask cluster (``executors``), how a run stops cleanly on SIGTERM (``signals``) and
how shard manifests become one (``merge``).
"""
