"""Agreement between the ranks of one job: process-group setup and the few collectives resilient needs."""
