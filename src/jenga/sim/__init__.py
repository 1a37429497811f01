"""The simulator: a runner that costs a StepPlan instead of running it
(roofline model of a GPU), workload generators, a JSONL trace format, and
the loop that drives the real scheduler and memory manager with them."""
