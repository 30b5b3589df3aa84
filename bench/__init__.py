"""Load benchmark of Bastion against nginx: `python bench/run.py` (see bench/README.md)."""
