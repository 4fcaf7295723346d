"""Object detection parts: anchors, box coding, target assignment, losses and
post-processing, in JAX with static shapes (jit-friendly)."""
