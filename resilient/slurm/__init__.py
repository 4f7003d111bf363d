"""SLURM, seen from inside a job: who we are, when we end, how we requeue, what hit us."""
