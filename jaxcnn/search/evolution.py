"""Regularized (aging) evolution, Real et al. 2019, Algorithm 1, and random
search, as one resumable state machine over architectures given as strings.

  population <- P random architectures, each trained
  until C children are trained:
    sample S population members with replacement
    parent <- the best of them; child <- mutate(parent); train the child
    append the child to the population; remove the oldest member

Random search is the same code path with every child drawn at random (the
first phase never ends); its "population" is then its last P children.

Training is asynchronous: `propose` hands out the next child (None while a
child must finish first, or when the budget is spent) and `report` takes a
finished one, in whatever order children finish. Members are ordered by
when they were reported, so "oldest" is the one reported first. With one
child at a time this is exactly Algorithm 1. The whole state (RNG included)
is plain JSON (`to_json`/`from_json`), so a search resumes exactly.
"""

import dataclasses
from typing import Any, Callable

import numpy as np

ALGORITHMS = ('evolution', 'random')

# (rng) -> a random architecture; (architecture, rng) -> (child, mutation).
Sampler = Callable[[np.random.Generator], str]
Mutator = Callable[[str, np.random.Generator], tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Proposal:
  """A child to train: its id, architecture, parent id and mutation."""
  id: int
  arch: str
  parent: int | None
  mutation: str  # 'random' for a randomly drawn child.


class Search:
  """The state of one search; `history` holds every reported child's record
  (its proposal's fields plus 'fitness' and whatever the trainer added)."""

  def __init__(self, algorithm: str, population_size: int, sample_size: int,
               num_children: int, seed: int):
    if algorithm not in ALGORITHMS:
      raise ValueError(f'algorithm must be one of {", ".join(ALGORITHMS)}, '
                       f'got {algorithm!r}.')
    self.algorithm = algorithm
    self.population_size = population_size
    self.sample_size = sample_size
    self.num_children = num_children
    self.rng = np.random.Generator(np.random.PCG64(seed))
    self.history: list[dict[str, Any]] = []
    self.population: list[int] = []  # History indices, oldest first.
    self.pending: list[Proposal] = []  # Proposed, not yet reported.

  @property
  def proposed(self) -> int:
    return len(self.history) + len(self.pending)

  @property
  def done(self) -> bool:
    return len(self.history) >= self.num_children

  def propose(self, sample: Sampler, mutate: Mutator) -> Proposal | None:
    """The next child, or None: budget spent, or no member to mutate yet."""
    if self.proposed >= self.num_children:
      return None
    child_id = self.proposed
    if self.algorithm == 'random' or child_id < self.population_size:
      proposal = Proposal(child_id, sample(self.rng), None, 'random')
    elif not self.population:
      return None
    else:
      picks = self.rng.integers(len(self.population), size=self.sample_size)
      members = [self.history[self.population[i]] for i in picks]
      parent = max(members, key=lambda r: r['fitness'])  # First of ties.
      arch, mutation = mutate(parent['arch'], self.rng)
      proposal = Proposal(child_id, arch, parent['id'], mutation)
    self.pending.append(proposal)
    return proposal

  def report(self, proposal: Proposal, fitness: float,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Adds the trained child to the history and the population (removing
    the oldest member beyond P); returns its record."""
    self.pending.remove(proposal)
    record = {**dataclasses.asdict(proposal), 'fitness': float(fitness),
              **(extra or {})}
    self.history.append(record)
    self.population.append(len(self.history) - 1)
    if len(self.population) > self.population_size:
      self.population.pop(0)
    return record

  def best(self) -> dict[str, Any]:
    """The fittest child so far (the first of ties)."""
    return max(self.history, key=lambda r: r['fitness'])

  def to_json(self) -> dict[str, Any]:
    return {'algorithm': self.algorithm,
            'population_size': self.population_size,
            'sample_size': self.sample_size,
            'num_children': self.num_children,
            'rng': self.rng.bit_generator.state,
            'history': self.history, 'population': self.population,
            'pending': [dataclasses.asdict(p) for p in self.pending]}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> 'Search':
    search = cls(data['algorithm'], data['population_size'],
                 data['sample_size'], data['num_children'], seed=0)
    search.rng.bit_generator.state = data['rng']
    search.history = list(data['history'])
    search.population = list(data['population'])
    search.pending = [Proposal(**p) for p in data['pending']]
    return search
