"""What a job attempt sends out as it runs.

Module map:
    publisher   an attempt's frames on its job's channel, numbered by `seq`
    outbox      finished jobs' last frames and records, sharing a round trip
    observe     the seam where an attempt reports what it did (metrics, Flower)
    metrics     the worker's Prometheus metrics
"""
