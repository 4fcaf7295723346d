"""Architecture search: regularized evolution (Real et al. 2019) and random
search over the NASNet cell space, children trained by the training loop."""
