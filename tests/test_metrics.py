"""metrics.jsonl: reading it back, torn and damaged lines."""

import pytest

from jaxcnn import metrics


def test_a_torn_last_line_is_left_out(tmp_path):
  (tmp_path / metrics.METRICS_FILE).write_text(
      '{"step": 1, "train/loss": 2.5}\n{"step": 2, "tra')
  assert metrics.read_metrics(str(tmp_path)) == [
      {'step': 1, 'train/loss': 2.5}]


def test_a_damaged_line_before_the_last_is_named(tmp_path):
  (tmp_path / metrics.METRICS_FILE).write_text(
      '{"step": 1}\n{"st\n{"step": 2}\n')
  with pytest.raises(ValueError, match=f'{tmp_path}/metrics.jsonl: line 2 '
                     'is not a JSON record'):
    metrics.read_metrics(str(tmp_path))


def test_truncating_repairs_the_file(tmp_path):
  (tmp_path / metrics.METRICS_FILE).write_text(
      '{"step": 1}\n{"step": 2}\n{"step": 3, "eval/acc')
  writer = metrics.MetricWriter(str(tmp_path))
  writer.truncate_after(1)
  writer.write(2, {'train/loss': 1.0})
  writer.close()
  assert (tmp_path / metrics.METRICS_FILE).read_text() == (
      '{"step": 1}\n{"step": 2, "train/loss": 1.0}\n')
