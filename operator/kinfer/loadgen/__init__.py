"""``kinfer loadgen``: an open-loop load generator that measures latency from the schedule.

Modules, one job each: ``plan`` (offered rate over time), ``arrivals`` (seeded send times),
``payloads`` (precomputed request bytes), ``httpclient`` (lean HTTP/1.1 keep-alive client),
``stats`` (mergeable HdrHistogram buckets), ``engine`` (one generator's send loop), ``workers``
(``--processes N``), ``recorder`` (records, windows, per-stage and whole-run summaries),
``results`` (files), ``metrics`` (Prometheus), ``control`` (HTTP API and dashboard), ``runner`` (one run,
start to finish), ``config`` and ``cli`` (command line and environment).
"""
