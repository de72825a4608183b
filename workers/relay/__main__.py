"""`python -m genq.workers.relay`: the relay process (what `genq relay` runs)."""

from genq.workers.relay.service import main

main()
