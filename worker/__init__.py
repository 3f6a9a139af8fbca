"""GPU/CPU workers: generation, the execution loop and SDPO training (imports torch)."""
