"""Training: the progressive-learning schedule, the data pipeline, the run directory, the loop."""
