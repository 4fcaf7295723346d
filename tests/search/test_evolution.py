"""Regularized evolution and random search on a problem with a known
answer: 100-bit strings scored by their fraction of ones plus N(0, 0.01)
noise (the google-research notebook's toy problem: P=100, S=10, 1000
children)."""

import json

import numpy as np
import pytest

from jaxcnn.search import evolution

BITS = 100


def random_bits(rng):
  return ''.join('01'[b] for b in rng.integers(2, size=BITS))


def flip_one_bit(bits, rng):
  i = int(rng.integers(BITS))
  return bits[:i] + ('1' if bits[i] == '0' else '0') + bits[i + 1:], f'bit {i}'


def true_fitness(bits):
  return bits.count('1') / BITS


def run_toy(algorithm, seed, population=100, sample=10, children=1000):
  search = evolution.Search(algorithm, population, sample, children, seed)
  noise = np.random.default_rng(seed + 1000)
  while not search.done:
    proposal = search.propose(random_bits, flip_one_bit)
    search.report(proposal, true_fitness(proposal.arch) +
                  noise.normal(0, 0.01))
  return search


def best_true(search):
  return max(true_fitness(r['arch']) for r in search.history)


def test_evolution_beats_random_search_on_every_seed():
  seeds = range(5)
  evolved = [best_true(run_toy('evolution', s)) for s in seeds]
  random = [best_true(run_toy('random', s)) for s in seeds]
  # Random: the best of 1000 draws of Binomial(100, 0.5) / 100, about 0.66.
  assert all(0.6 <= r <= 0.72 for r in random), random
  assert all(e >= 0.85 for e in evolved), evolved
  assert min(e - r for e, r in zip(evolved, random)) >= 0.15


def test_population_ages_out_its_oldest_member():
  search = run_toy('evolution', 0, population=5, sample=2, children=12)
  assert len(search.history) == 12
  assert search.population == list(range(7, 12))  # The last five reported.
  assert [r['mutation'] for r in search.history[:5]] == ['random'] * 5
  assert all(r['mutation'].startswith('bit ') for r in search.history[5:])
  # Every parent was alive when its child was proposed (the 5 reported just
  # before it).
  for r in search.history[5:]:
    assert r['id'] - 5 <= r['parent'] < r['id']


def test_parent_is_the_best_of_the_sample():
  # With S much larger than P (sampled with replacement) the sample holds
  # the whole population, so the parent is always its best member.
  search = evolution.Search('evolution', 3, 200, 20, seed=0)
  noise = np.random.default_rng(0)  # No ties.
  while not search.done:
    proposal = search.propose(random_bits, flip_one_bit)
    if proposal.parent is not None:
      alive = [search.history[i] for i in search.population]
      assert proposal.parent == max(alive, key=lambda r: r['fitness'])['id']
    search.report(proposal, true_fitness(proposal.arch) +
                  noise.normal(0, 0.01))


def test_random_search_never_mutates():
  search = run_toy('random', 0, population=5, sample=2, children=30)
  assert {r['mutation'] for r in search.history} == {'random'}
  assert {r['parent'] for r in search.history} == {None}
  assert search.population == list(range(25, 30))


def test_waits_for_a_member_before_mutating():
  search = evolution.Search('evolution', 2, 2, 5, seed=0)
  first = search.propose(random_bits, flip_one_bit)
  second = search.propose(random_bits, flip_one_bit)
  assert (first.id, second.id) == (0, 1)
  assert search.propose(random_bits, flip_one_bit) is None  # None reported.
  search.report(second, 0.5)
  third = search.propose(random_bits, flip_one_bit)
  assert third.parent == 1 and [p.id for p in search.pending] == [0, 2]


def test_a_restored_search_continues_exactly():
  whole = run_toy('evolution', 3, population=10, sample=3, children=60)
  search = evolution.Search('evolution', 10, 3, 60, seed=3)
  noise = np.random.default_rng(1003)
  while not search.done:
    # Saved and restored (through plain JSON) before every child.
    search = evolution.Search.from_json(json.loads(json.dumps(
        search.to_json())))
    proposal = search.propose(random_bits, flip_one_bit)
    search.report(proposal, true_fitness(proposal.arch) +
                  noise.normal(0, 0.01))
  assert search.history == whole.history


def test_unknown_algorithm_is_refused():
  with pytest.raises(ValueError, match='algorithm must be one of'):
    evolution.Search('annealing', 2, 2, 5, seed=0)
