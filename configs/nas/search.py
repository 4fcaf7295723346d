"""Fields of an architecture search (nas.py), shared by configs/nas/*.py.

The search: `algorithm` ('evolution': regularized evolution, Real et al.
2019; 'random': random search, same budget and code path), `seed`,
`population_size` (P), `sample_size` (S), `num_children` (C, the initial
population included), `identity_probability` (a mutation that keeps the
parent), `initial_genotypes` (genotype strings or names that start the
population before random ones).
The space: `ops` ('evolution': the paper's 8, 'nasnet': NASNet's 13, or
comma-separated op names of jaxcnn/models/genotype.py), `num_blocks` per
cell.
The children: `child`, a train config (configs/base.py's fields) for the
search-sized network, trained on the first 100 - `validation_percent` % of
its dataset's train split and scored on the rest;
`compilation_cache_dir` (default WORKDIR/compilation_cache);
`child_xla_flags`, added to XLA_FLAGS in the children's processes: by
default XLA:CPU compiles without LLVM's costly optimisations, since a
search-sized child spends most of its time compiling (a third less there;
set '' on accelerators or for long children).
"""

import ml_collections
from ml_collections import config_dict

from configs import nasnet_cifar10


def child_config(dataset: str, image_size: int, num_cells: int, filters: int,
                 num_epochs: float) -> ml_collections.ConfigDict:
  """The CIFAR NASNet recipe, made small: `num_cells` cells per stage at
  `filters`, no auxiliary head, drop path or cutout, one evaluation."""
  child = nasnet_cifar10.get_config()
  child.unlock()
  child.dataset = dataset
  child.image_size = image_size
  child.model_kwargs.num_cells = num_cells
  child.model_kwargs.filters = filters
  child.model_kwargs.stem_filters = 2 * filters
  child.model_kwargs.aux_head = False
  child.model_kwargs.drop_path_rate = 0.0
  child.cutout_size = 0
  child.batch_size = 64
  child.eval_batch_size = 500
  child.learning_rate = 0.05
  child.lr_batch_size = 64
  child.num_epochs = num_epochs
  child.eval_every_epochs = num_epochs
  child.log_every_steps = 10_000
  child.checkpoint_every_steps = 10_000
  child.keep_checkpoints = 1
  child.progress_bar = False
  child.lock()
  return child


def search_config(algorithm: str,
                  child: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.algorithm = algorithm
  config.seed = 0
  # Sized for the 30-minute digits budget on 2 cores (--parallel=2).
  config.population_size = 8
  config.sample_size = 3
  config.num_children = 20
  config.identity_probability = 0.05
  config.initial_genotypes = ()
  config.ops = 'evolution'
  config.num_blocks = 5
  config.validation_percent = 20
  config.compilation_cache_dir = config_dict.placeholder(str)
  config.child_xla_flags = ('--xla_backend_optimization_level=0 '
                            '--xla_llvm_disable_expensive_passes=true')
  config.child = child
  return config
