"""sched/: when things run.  Requests, the continuous-batching scheduler and
the StepPlan / StepResult boundary.  Pure Python: never imports torch."""
