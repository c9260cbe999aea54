"""A run and its training loop: `training.train` and what it is built from."""
