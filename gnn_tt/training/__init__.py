"""Training: the job's config, the data-parallel loop, evaluation, checkpoints and the summary."""
