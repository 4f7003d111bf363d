"""Integrations with training frameworks that drive their own loop (Lightning's and Hugging Face's `Trainer`).

Each is a module of its own that imports its framework itself, so `import resilient` never
needs one installed: `resilient.integrations.lightning` and `.huggingface` are imported only by
code that uses them.
This layer sits on top: it reuses the run (`loop.Run`: lock, signals, per-step agreement,
requeue), the checkpoint storage and its discovery, and adds only what the framework needs.
"""
