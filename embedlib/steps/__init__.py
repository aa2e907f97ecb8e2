"""One module per pipeline step: what it reads (extract), computes (transform), writes (load).

``run(spark, cfg, dt) -> dict`` is what a job in ``jobs/`` and the pipeline runner call; the
dict is the step's summary (counts, metrics) for logs and reports.
"""
