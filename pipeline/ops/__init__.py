"""Long-running operations and tools: Prefect flows, the model page, the team stack, presets and plots commands."""
