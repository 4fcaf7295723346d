"""A search's summary numbers and its progress plot beside another search
in the same parent directory."""

import json
import statistics

from jaxcnn.search import report


def _records(accuracies):
  return [{'id': i, 'parent': None if i < 2 else i - 1,
           'mutation': 'random' if i < 2 else 'identity',
           'genotype': f'g{i}', 'accuracy': a, 'params': 1000 + i,
           'macs': 2e6, 'train_seconds': 3.0, 'workdir': f'children/{i:06d}'}
          for i, a in enumerate(accuracies)]


def test_summary_numbers():
  records = _records([0.2, 0.6, 0.5, 0.4])
  numbers = report.summary(records, population=[2, 3], algorithm='evolution',
                           num_children=10, elapsed_seconds=1800)
  assert numbers['best_accuracy'] == 0.6 and numbers['best_id'] == 1
  assert numbers['population_mean'] == statistics.fmean([0.5, 0.4])
  assert numbers['population_std'] == statistics.stdev([0.5, 0.4])
  assert numbers['children_per_hour'] == 8.0
  assert report.best_so_far([0.2, 0.6, 0.5, 0.7]) == [0.2, 0.6, 0.6, 0.7]


def test_progress_plots_every_search_of_the_parent_directory(tmp_path):
  for name, algorithm, accuracies in (('evo', 'evolution', [0.1, 0.3, 0.5]),
                                      ('rand', 'random', [0.2, 0.25, 0.1])):
    (tmp_path / name).mkdir()
    history = [{'id': i, 'fitness': a} for i, a in enumerate(accuracies)]
    (tmp_path / name / 'search.json').write_text(json.dumps(
        {'state': {'algorithm': algorithm, 'history': history}}))
  searches = report.searches_beside(str(tmp_path / 'evo'))
  assert searches == {'evo': ('evolution', [0.1, 0.3, 0.5]),
                      'rand': ('random', [0.2, 0.25, 0.1])}
  ax = report.progress_figure(searches, own='evo').axes[0]
  lines = {line.get_label(): list(line.get_ydata()) for line in ax.lines}
  assert lines == {'evo (evolution) best so far': [0.1, 0.3, 0.5],
                   'evo children': [0.1, 0.3, 0.5],
                   'rand (random) best so far': [0.2, 0.25, 0.25]}
  records = _records([0.1, 0.3, 0.5])
  report.write(str(tmp_path / 'evo'), records, [1, 2], 'evolution', 3, 60.0)
  assert (tmp_path / 'evo' / 'progress.png').read_bytes()[:4] == b'\x89PNG'
  lines = (tmp_path / 'evo' / 'history.jsonl').read_text().splitlines()
  assert [json.loads(line) for line in lines] == records
  best = json.loads((tmp_path / 'evo' / 'best.json').read_text())
  assert best['genotype'] == 'g2' and best['record'] == records[2]
  assert "--config.model_kwargs.genotype='g2'" in best['command']
  assert '| 0.5000 (child 2) | 0.4000 ± 0.1414 |' in (
      tmp_path / 'evo' / 'summary.md').read_text()
