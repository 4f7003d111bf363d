"""Whether a stopped job comes back: policy, what each host does, and the state it records in the run directory."""
