"""jaxcnn: classic CNN image models and their training stack in JAX."""
