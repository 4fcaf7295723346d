"""NASNet search-space genotypes: cells as data, with a compact string form.

A cell has hidden states 0 = h (the current input, after ReLU-1x1-BN),
1 = p (the previous cell's output, adjusted to h's shape) and 2, 3, ... = the
outputs of its blocks in order. Block i reads two earlier states, applies an
op to each and sums them; the cell output concatenates the `concat` states.

String form (what a config or a command line carries), e.g. NASNet-A:

  normal=0:sep5+1:sep3,1:sep5+1:sep3,0:avg3+1:id,1:avg3+1:avg3,0:sep3+0:id/
  1,2,3,4,5,6;reduce=0:sep5+1:sep7,0:max3+1:sep7,0:avg3+1:sep5,3:id+2:avg3,
  2:sep3+0:max3/3,4,5,6

(one line, no spaces): per cell `state:op+state:op` blocks separated by
commas, then `/` and the concatenated states. Without `/...` a cell
concatenates the block outputs that no block reads. `parse` also takes the
name of a genotype in GENOTYPES.
"""

from typing import NamedTuple

# Op name -> what it computes (jaxcnn.models.nasnet builds them). Every op
# maps its input to the cell's filter count; in a reduction cell an op that
# reads state 0 or 1 has stride 2.
OPS = {
    'id': 'identity (strided ReLU-1x1-BN when it must change the shape)',
    'sep3': '[ReLU, separable 3x3, BN] x 2',
    'sep5': '[ReLU, separable 5x5, BN] x 2',
    'sep7': '[ReLU, separable 7x7, BN] x 2',
    'dilsep3': 'ReLU, separable 3x3 with dilation 2, BN',
    'avg3': '3x3 average pooling',
    'max3': '3x3 max pooling',
    'max5': '5x5 max pooling',
    'max7': '7x7 max pooling',
    'conv1x1': 'ReLU, 1x1 conv, BN',
    'conv3x3': 'ReLU, 3x3 conv, BN',
    'dilconv3': 'ReLU, 3x3 conv with dilation 2, BN',
    'conv1x3_3x1': 'ReLU, 1x3 conv, 3x1 conv, BN',
    'conv1x7_7x1': 'ReLU, 1x7 conv, 7x1 conv, BN',
}
NUM_INPUTS = 2  # States 0 (h) and 1 (p).


class Block(NamedTuple):
  input_a: int
  op_a: str
  input_b: int
  op_b: str


class Cell(NamedTuple):
  blocks: tuple[Block, ...]
  concat: tuple[int, ...]  # States concatenated into the output, in order.


class Genotype(NamedTuple):
  normal: Cell
  reduce: Cell


def unused_states(blocks: tuple[Block, ...]) -> tuple[int, ...]:
  """The block outputs that no block reads (the default `concat`)."""
  read = {b.input_a for b in blocks} | {b.input_b for b in blocks}
  return tuple(s for s in range(NUM_INPUTS, NUM_INPUTS + len(blocks))
               if s not in read)


def make_cell(blocks: list[tuple[int, str, int, str]],
              concat: tuple[int, ...] | None = None) -> Cell:
  """A validated Cell; `concat` defaults to `unused_states(blocks)`."""
  blocks = tuple(Block(*b) for b in blocks)
  cell = Cell(blocks, unused_states(blocks) if concat is None
              else tuple(concat))
  validate_cell(cell, 'cell')
  return cell


def validate_cell(cell: Cell, label: str) -> None:
  """Raises a one-line ValueError naming what is wrong with `cell`."""
  if not cell.blocks:
    raise ValueError(f'Genotype {label}: a cell needs at least one block.')
  for i, block in enumerate(cell.blocks):
    for state, op in ((block.input_a, block.op_a),
                      (block.input_b, block.op_b)):
      if op not in OPS:
        raise ValueError(f'Genotype {label} block {i}: unknown op {op!r}; '
                         f'choose one of {", ".join(OPS)}.')
      if not isinstance(state, int) or not 0 <= state < NUM_INPUTS + i:
        raise ValueError(
            f'Genotype {label} block {i}: input {state!r} is not an earlier '
            f'state (0..{NUM_INPUTS + i - 1}).')
  last = NUM_INPUTS + len(cell.blocks) - 1
  if not cell.concat:
    raise ValueError(f'Genotype {label}: the output concatenates no state.')
  for state in cell.concat:
    if not isinstance(state, int) or not 0 <= state <= last:
      raise ValueError(f'Genotype {label}: concatenated state {state!r} does '
                       f'not exist (0..{last}).')
  if len(set(cell.concat)) != len(cell.concat):
    raise ValueError(f'Genotype {label}: concat {list(cell.concat)} repeats '
                     'a state.')


def validate(genotype: Genotype) -> Genotype:
  for label, cell in zip(genotype._fields, genotype):
    validate_cell(cell, label)
  return genotype


NASNET_A = validate(Genotype(
    normal=Cell(
        (Block(0, 'sep5', 1, 'sep3'), Block(1, 'sep5', 1, 'sep3'),
         Block(0, 'avg3', 1, 'id'), Block(1, 'avg3', 1, 'avg3'),
         Block(0, 'sep3', 0, 'id')),
        # p is read and still concatenated (slim's used_hiddenstates).
        (1, 2, 3, 4, 5, 6)),
    reduce=Cell(
        (Block(0, 'sep5', 1, 'sep7'), Block(0, 'max3', 1, 'sep7'),
         Block(0, 'avg3', 1, 'sep5'), Block(3, 'id', 2, 'avg3'),
         Block(2, 'sep3', 0, 'max3')),
        (3, 4, 5, 6)),
))

GENOTYPES = {'nasnet_a': NASNET_A}


def _format_cell(cell: Cell) -> str:
  blocks = ','.join(f'{b.input_a}:{b.op_a}+{b.input_b}:{b.op_b}'
                    for b in cell.blocks)
  return f'{blocks}/{",".join(map(str, cell.concat))}'


def format_genotype(genotype: Genotype) -> str:
  """The string form; `parse(format_genotype(g)) == g`."""
  return ';'.join(f'{label}={_format_cell(cell)}'
                  for label, cell in zip(genotype._fields, genotype))


def _parse_int(text: str, what: str, label: str) -> int:
  if not text.isdigit():
    raise ValueError(f'Genotype {label}: {what} {text!r} is not a state '
                     'number.')
  return int(text)


def _parse_cell(text: str, label: str) -> Cell:
  body, slash, concat_text = text.partition('/')
  blocks = []
  for i, block in enumerate(body.split(',')):
    pair = block.split('+')
    ops = [part.split(':') for part in pair]
    if len(pair) != 2 or any(len(op) != 2 for op in ops):
      raise ValueError(f'Genotype {label} block {i}: {block!r} is not '
                       '"state:op+state:op".')
    (a, op_a), (b, op_b) = ops
    blocks.append(Block(_parse_int(a, 'input', label), op_a,
                        _parse_int(b, 'input', label), op_b))
  blocks = tuple(blocks)
  concat = (tuple(_parse_int(s, 'concatenated state', label)
                  for s in concat_text.split(','))
            if slash else unused_states(blocks))
  cell = Cell(blocks, concat)
  validate_cell(cell, label)
  return cell


def parse(text: str | Genotype) -> Genotype:
  """A Genotype from its string form or a GENOTYPES name (or a Genotype)."""
  if isinstance(text, Genotype):
    return validate(text)
  if text in GENOTYPES:
    return GENOTYPES[text]
  cells = {}
  for part in text.split(';'):
    label, eq, body = part.partition('=')
    if not eq or label not in Genotype._fields:
      raise ValueError(
          f'Genotype {text!r}: expected "normal=...;reduce=..." or one of '
          f'{", ".join(GENOTYPES)}; got the part {part!r}.')
    if label in cells:
      raise ValueError(f'Genotype {text!r}: {label} is given twice.')
    cells[label] = _parse_cell(body, label)
  missing = [label for label in Genotype._fields if label not in cells]
  if missing:
    raise ValueError(f'Genotype {text!r}: no {" or ".join(missing)} cell.')
  return Genotype(**cells)
