"""Sweeps: many runs from a grid, in this process, worker processes or SLURM jobs, and their status."""
