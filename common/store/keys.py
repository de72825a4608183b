"""`Keys`: the prefix every genq key and channel starts with (GENQ_KEY_PREFIX), which each
store module names its own keys under.

A job's keys carry its id in a hash tag (`genq:{<id>}:<suffix>`), so that one job's keys share
a Redis Cluster slot; `per_job` spells that form once for the modules that own such keys (jobs,
streams, gateway)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "genq"

    def per_job(self, job_id: str, suffix: str) -> str:
        """`<prefix>:{<job id>}:<suffix>`: one of a job's keys, in the job's slot."""
        return f"{self.prefix}:{{{job_id}}}:{suffix}"
