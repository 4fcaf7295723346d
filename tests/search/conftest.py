"""One compilation cache per test process: children of one genotype
compile once."""


import pytest

from tests.search import helpers


@pytest.fixture(scope='session')
def compilation_cache(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp('jax_compilation_cache'))


@pytest.fixture(scope='session')
def nas_command(compilation_cache):
  """helpers.nas_command with this session's compilation cache."""
  return lambda workdir, *overrides, **kwargs: helpers.nas_command(
      workdir, compilation_cache, *overrides, **kwargs)
