"""bench/: benchmark drivers that print and record measured results."""
