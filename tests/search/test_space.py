"""The NASNet cell space: sampling, mutation, serialisation, and that its
genotypes build."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.models import genotype as genotype_lib
from jaxcnn.search import space as space_lib


def test_op_sets_are_the_papers():
  assert space_lib.op_set('evolution') == (
      'id', 'sep3', 'sep5', 'sep7', 'avg3', 'max3', 'dilsep3', 'conv1x7_7x1')
  assert len(space_lib.op_set('nasnet')) == 13
  assert set(space_lib.op_set('nasnet')) == set(genotype_lib.OPS) - {
      'dilsep3'}
  assert space_lib.op_set('id, max3') == ('id', 'max3')
  with pytest.raises(ValueError, match="unknown op.*'conv9'"):
    space_lib.op_set('sep3,conv9')
  with pytest.raises(ValueError, match='at least two different ops'):
    space_lib.op_set('sep3')


def test_samples_are_valid_uniform_and_round_trip():
  space = space_lib.CellSpace()
  rng = np.random.default_rng(0)
  ops, inputs = collections.Counter(), collections.Counter()
  for _ in range(300):
    genotype = space.sample(rng)
    text = genotype_lib.format_genotype(genotype)
    assert space.parse(text) == genotype
    for cell in genotype:
      assert len(cell.blocks) == 5
      assert cell.concat == genotype_lib.unused_states(cell.blocks)
      for i, block in enumerate(cell.blocks):
        ops.update([block.op_a, block.op_b])
        inputs[(i, block.input_a)] += 1
        assert block.input_a < 2 + i and block.input_b < 2 + i
  assert set(ops) == set(space.ops)
  # 6000 ops of 8, uniform: each 750 expected.
  assert all(650 < n < 850 for n in ops.values()), ops
  # Input a of the last blocks (600) reads each of its 6 states ~100 times.
  assert all(60 < inputs[(4, s)] < 140 for s in range(6))


def _differences(parent, child):
  return [(label, i, field, getattr(a, field), getattr(b, field))
          for label, p, c in zip(space_lib.CELLS, parent, child)
          for i, (a, b) in enumerate(zip(p.blocks, c.blocks))
          for field in genotype_lib.Block._fields
          if getattr(a, field) != getattr(b, field)]


def test_a_mutation_changes_one_input_or_op_as_described():
  space = space_lib.CellSpace()
  rng = np.random.default_rng(1)
  kinds = collections.Counter()
  for _ in range(400):
    parent = space.sample(rng)
    child, mutation = space.mutate(parent, rng, identity_probability=0.1)
    kind = mutation.split()[0]
    kinds[kind] += 1
    if kind == 'identity':
      assert child == parent
      continue
    [(label, i, field, old, new)] = _differences(parent, child)
    side = field[-1]
    assert mutation == f'{kind} {label} block {i} {side}: {old} -> {new}'
    if kind == 'hidden':
      assert field.startswith('input') and 0 <= new < 2 + i
    else:
      assert field.startswith('op') and new in space.ops
    assert getattr(child, label).concat == genotype_lib.unused_states(
        getattr(child, label).blocks)
  assert 20 < kinds['identity'] < 65  # 10% of 400.
  assert abs(kinds['hidden'] - kinds['op']) < 60


def test_never_identity_at_probability_zero():
  space = space_lib.CellSpace(('id', 'max3'), num_blocks=1)
  rng = np.random.default_rng(2)
  parent = space.sample(rng)
  assert all(space.mutate(parent, rng, 0.0)[0] != parent for _ in range(50))


def test_parse_names_what_is_outside_the_space():
  space = space_lib.CellSpace(('id', 'max3'), num_blocks=1)
  text = 'normal=0:id+1:max3;reduce=1:id+0:id'
  assert space.parse(text) == genotype_lib.parse(text)
  with pytest.raises(ValueError, match='Genotype normal: 2 blocks, the search '
                     'space has 1'):
    space.parse('normal=0:id+1:max3,0:id+1:id;reduce=1:id+0:id')
  with pytest.raises(ValueError, match=r'reduce: op\(s\) sep3 are not in'):
    space.parse('normal=0:id+1:max3;reduce=1:sep3+0:id')
  with pytest.raises(ValueError, match='block 0'):
    space.parse('normal=0:id+7:max3;reduce=1:id+0:id')


@pytest.mark.parametrize('ops', ['evolution', 'nasnet'])
def test_sampled_and_mutated_genotypes_build(ops):
  space = space_lib.CellSpace(space_lib.op_set(ops))
  rng = np.random.default_rng(3)
  parent = space.sample(rng)
  child, _ = space.mutate(parent, rng, 0.0)
  images = jax.ShapeDtypeStruct((2, 16, 16, 1), jnp.float32)
  for genotype in (parent, child):
    model = models.create('nasnet_cifar', num_classes=10, num_cells=1,
                          filters=8, stem_filters=16, in_channels=1,
                          genotype=genotype_lib.format_genotype(genotype))
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    logits = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False), variables, images)
    assert logits.shape == (2, 10)
