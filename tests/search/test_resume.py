"""A search SIGKILLed while a child trains, rerun with the same command,
ends with the history of an uninterrupted search (one worker), without
training a finished child again."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.search import helpers

pytestmark = pytest.mark.cost_seconds(155)

SEARCH = [helpers.CHEAP_OPS, '--config.num_children=3',
          '--config.population_size=2', '--config.sample_size=2']


def _state(workdir):
  try:
    with open(os.path.join(workdir, 'search.json')) as f:
      return json.load(f)['state']
  except (OSError, ValueError):
    return None


def _history(workdir):
  with open(os.path.join(workdir, 'history.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items()
             if k != 'train_seconds'} for line in f]


def _children_reported(stdout):
  return [int(line.split('id ')[1].split(')')[0])
          for line in stdout.splitlines() if line.startswith('child ')]


def test_sigkill_then_rerun_ends_with_the_uninterrupted_history(
    tmp_path, nas_command):
  whole = tmp_path / 'whole'
  done = helpers.run_nas(nas_command(whole, *SEARCH))
  assert done.returncode == 0, done.stderr[-3000:]

  killed = tmp_path / 'killed'
  search = subprocess.Popen(nas_command(killed, *SEARCH), cwd=helpers.REPO,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
  deadline = time.monotonic() + 300
  # Child 0 is recorded and child 1, proposed, trains.
  while not ((state := _state(killed)) and len(state['history']) == 1 and
             [p['id'] for p in state['pending']] == [1]):
    assert search.poll() is None and time.monotonic() < deadline
    time.sleep(0.1)
  os.killpg(search.pid, signal.SIGKILL)  # The search and its workers.
  search.wait()
  result = os.path.join(killed, 'children', '000000', 'result.json')
  finished_at = os.stat(result).st_mtime_ns

  resumed = helpers.run_nas(nas_command(killed, *SEARCH))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert _children_reported(resumed.stdout) == [1, 2]
  assert os.stat(result).st_mtime_ns == finished_at
  assert _history(killed) == _history(whole)
  assert len(_history(whole)) == 3
