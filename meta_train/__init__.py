"""Meta-training: vectorized truncated unrolls, ES/PES/backprop, outer loop."""
