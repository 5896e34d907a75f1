"""Meta-training configurations (ml_collections), one module per run size."""
