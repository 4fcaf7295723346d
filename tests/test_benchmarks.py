"""The benchmark scripts run (2 steps, CI-sized); no timing is asserted."""

from benchmarks import train_throughput


def test_train_throughput_measures_the_real_step():
  config, recipe = train_throughput._recipe('lenet5', '')
  assert recipe == 'base'
  config.image_size = 32
  results = train_throughput.measure(config, batch=4, steps=2, warmup=1)
  assert set(results) == {'compile_s', 'step_s', 'images_per_s', 'loss'}
  assert results['step_s'] > 0 and results['images_per_s'] > 0
  assert 0 < results['loss'] < 20
