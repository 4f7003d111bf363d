"""Whether a stopped job comes back: policy, status file, and what each host does."""
