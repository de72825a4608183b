"""The generation loop, the same for every backend.

Module map:
    loop      continuation windows of tokens: stops, text, chunks and the frames they become
    resume    where a resumed attempt starts: what the job's durable stream holds
    sampled   one sampled token (what a backend's session yields)
    chunks    coalescing tokens into chunks, so per-token round trips do not cap throughput
    text      token pieces (bytes) to final text, incrementally
"""
