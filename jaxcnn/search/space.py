"""The NASNet cell space (Zoph et al. 2018) as Real et al. 2019 search it.

An architecture is a `jaxcnn.models.genotype.Genotype`: a normal and a
reduction cell of `num_blocks` blocks, each block two (input state, op)
pairs; a cell concatenates the block outputs that no block reads. The space
samples architectures uniformly, mutates them as the paper does (one cell,
one block, one of its two pairs: a hidden-state mutation rewires the pair to
another earlier state, an op mutation swaps its op for another; with
`identity_probability` the child is the parent unchanged), and writes and
reads them as genotype strings, the form `--config.model_kwargs.genotype`
takes.
"""

import dataclasses

import numpy as np

from jaxcnn.models import genotype as genotype_lib

# Real et al. 2019: identity, 3x3/5x5/7x7 separable convs, 3x3 average and
# max pooling, 3x3 dilated separable conv, 1x7 then 7x1 conv.
EVOLUTION_OPS = ('id', 'sep3', 'sep5', 'sep7', 'avg3', 'max3', 'dilsep3',
                 'conv1x7_7x1')
# Zoph et al. 2018's 13.
NASNET_OPS = ('id', 'conv1x3_3x1', 'conv1x7_7x1', 'dilconv3', 'avg3', 'max3',
              'max5', 'max7', 'conv1x1', 'conv3x3', 'sep3', 'sep5', 'sep7')
OP_SETS = {'evolution': EVOLUTION_OPS, 'nasnet': NASNET_OPS}
CELLS = genotype_lib.Genotype._fields  # ('normal', 'reduce')


def op_set(spec: str) -> tuple[str, ...]:
  """The ops of a name in OP_SETS or of a comma-separated list of op names;
  ValueError saying what is wrong."""
  ops = OP_SETS.get(spec) or tuple(o.strip() for o in spec.split(','))
  unknown = [o for o in ops if o not in genotype_lib.OPS]
  if unknown:
    raise ValueError(f'unknown op(s) {", ".join(map(repr, unknown))}: give '
                     f'{" or ".join(OP_SETS)}, or ops among '
                     f'{", ".join(genotype_lib.OPS)}')
  if len(set(ops)) != len(ops) or len(ops) < 2:
    raise ValueError('needs at least two different ops (an op mutation '
                     'swaps one for another)')
  return ops


@dataclasses.dataclass(frozen=True)
class CellSpace:
  ops: tuple[str, ...] = EVOLUTION_OPS
  num_blocks: int = 5

  def sample(self, rng: np.random.Generator) -> genotype_lib.Genotype:
    """A uniformly random architecture."""
    def cell():
      blocks = []
      for i in range(self.num_blocks):
        states = rng.integers(genotype_lib.NUM_INPUTS + i, size=2)
        ops = rng.integers(len(self.ops), size=2)
        blocks.append((int(states[0]), self.ops[ops[0]], int(states[1]),
                       self.ops[ops[1]]))
      return genotype_lib.make_cell(blocks)
    return genotype_lib.Genotype(normal=cell(), reduce=cell())

  def mutate(self, genotype: genotype_lib.Genotype, rng: np.random.Generator,
             identity_probability: float
             ) -> tuple[genotype_lib.Genotype, str]:
    """The child and a description of the mutation, e.g. 'op normal block 2
    b: sep3 -> max3', 'hidden reduce block 1 a: 0 -> 2' or 'identity'."""
    if rng.random() < identity_probability:
      return genotype, 'identity'
    kind = ('hidden', 'op')[rng.integers(2)]
    label = CELLS[rng.integers(len(CELLS))]
    cell = getattr(genotype, label)
    index = int(rng.integers(len(cell.blocks)))
    side = int(rng.integers(2))
    block = list(cell.blocks[index])
    old = block[2 * side + (kind == 'op')]
    if kind == 'hidden':  # Another state before this block.
      choices = [s for s in range(genotype_lib.NUM_INPUTS + index)
                 if s != old]
    else:
      choices = [o for o in self.ops if o != old]
    new = choices[rng.integers(len(choices))]
    block[2 * side + (kind == 'op')] = new
    blocks = [tuple(b) for b in cell.blocks]
    blocks[index] = tuple(block)
    child = genotype._replace(**{label: genotype_lib.make_cell(blocks)})
    return child, f'{kind} {label} block {index} {"ab"[side]}: {old} -> {new}'

  def parse(self, text: str) -> genotype_lib.Genotype:
    """A genotype string of this space; ValueError naming what is wrong."""
    genotype = genotype_lib.parse(text)
    for label, cell in zip(CELLS, genotype):
      if len(cell.blocks) != self.num_blocks:
        raise ValueError(f'Genotype {label}: {len(cell.blocks)} blocks, the '
                         f'search space has {self.num_blocks}.')
      ops = sorted({op for b in cell.blocks for op in (b.op_a, b.op_b)} -
                   set(self.ops))
      if ops:
        raise ValueError(f'Genotype {label}: op(s) {", ".join(ops)} are not '
                         f'in the search space ({", ".join(self.ops)}).')
    return genotype

  # String forms: what the search and its records carry.
  def sample_string(self, rng: np.random.Generator) -> str:
    return genotype_lib.format_genotype(self.sample(rng))

  def mutate_string(self, text: str, rng: np.random.Generator,
                    identity_probability: float) -> tuple[str, str]:
    child, mutation = self.mutate(self.parse(text), rng, identity_probability)
    return genotype_lib.format_genotype(child), mutation
