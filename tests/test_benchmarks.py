"""The benchmark scripts run (2 steps, CI-sized); no timing is asserted."""

import collections
import functools
import json
import statistics
import sys
import tempfile

from absl import app
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import benchmarks
from benchmarks import train_throughput
from jaxcnn import models
from jaxcnn import optim
from jaxcnn import state as state_lib
from jaxcnn import tasks
from jaxcnn.models import lowering

pytestmark = pytest.mark.cost_seconds(295)

_JAX_FIELDS = {'parameters', 'compile_s', 'step_s', 'images_per_s',
               'flops_per_step', 'peak_memory_bytes', 'memory_source', 'loss',
               'peak_flops_per_s', 'peak_matmul', 'achieved_flops_per_s',
               'mfu', 'lowering', 'platform', 'device', 'devices'}


def _check_sane(result: dict) -> None:
  assert result['step_s'] > 0 and result['images_per_s'] > 0
  assert 0 < result['loss'] < 20
  assert 0 < result['mfu'] < 1.5


@pytest.mark.parametrize('dtype', train_throughput.DTYPES)
def test_train_throughput_measures_the_real_step(dtype):
  config, recipe = train_throughput.load_recipe('lenet5', '')
  assert recipe == 'base'
  config.image_size = 32
  row = train_throughput.run(config, dtype, batch=4, steps=2, warmup=1,
                             num_classes=10, isolate=False)
  ours = row['jaxcnn']
  assert set(ours) == _JAX_FIELDS
  _check_sane(ours)
  assert ours['flops_per_step'] > 0 and ours['peak_memory_bytes'] > 0
  assert ours['peak_flops_per_s'] > 0 and ours['platform'] == 'cpu'
  assert dtype in ours['peak_matmul']
  # LeNet-5 has no torchvision/timm counterpart.
  assert row['peer'] == {
      'skipped': "no torchvision/timm reference for 'lenet5'"}
  assert 'ratio' not in row
  assert 'skipped' in train_throughput.table({'results': [row]})


def test_benchmark_step_trains_at_the_peers_peak_learning_rate():
  # As the peer does; the recipe's 5-epoch warm-up would leave the rate ~0.
  config, _ = train_throughput.load_recipe('lenet5', '')
  config.image_size = 32
  train_step = train_throughput.build_train_step(config, batch=8,
                                                 num_classes=10)
  state, data = train_step.state, train_step.data
  losses = []
  for _ in range(6):
    state, metrics = train_step.jitted(state, data)
    losses.append(float(metrics['loss']))
  assert optim.peak_learning_rate(config) == 0.1 * 1024 / 256
  assert float(metrics['learning_rate']) == pytest.approx(
      optim.peak_learning_rate(config))
  assert min(losses) < losses[0] - 0.2  # ~0.001 with the warm-up.


def test_peer_is_skipped_with_a_hint_where_torch_is_missing(monkeypatch):
  # Forget an imported peer module, so that it is imported again.
  monkeypatch.delitem(sys.modules, 'benchmarks.torch_peer', raising=False)
  monkeypatch.delattr(benchmarks, 'torch_peer', raising=False)
  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch fails.
  config, _ = train_throughput.load_recipe('resnet18', 'resnet18_cifar10')
  assert train_throughput._torch_run(config, 2, 1, 0, 10, 'cpu', 'off') == {
      'skipped': 'no peer: torch is not installed (pip install -r '
                 'requirements-dev.txt, or --peer=none)'}


def test_torch_peer_trains_the_same_network_and_is_compared():
  pytest.importorskip('torch')
  # ResNet-18 on CIFAR-10 keeps the ImageNet network: so does the peer.
  config, _ = train_throughput.load_recipe('resnet18', 'resnet18_cifar10')
  assert config.image_size == 32
  row = train_throughput.run(config, 'float32', batch=2, steps=2, warmup=0,
                             num_classes=10, peer_compile='off',
                             isolate=False)
  peer = row['peer']
  assert peer['peer_model'] == 'torchvision resnet18'
  assert peer['parameters'] == row['jaxcnn']['parameters'] == 11_181_642
  assert peer['peer_mode'] == 'eager' and peer['peer_device'] == 'cpu'
  _check_sane(peer)
  assert row['ratio'] == pytest.approx(
      row['jaxcnn']['images_per_s'] / peer['images_per_s'])
  lines = train_throughput.table({'results': [row]}).splitlines()
  assert [line.split()[:3] for line in lines[1:3]] == [
      ['float32', 'jaxcnn', 'jit'], ['float32', 'torch', 'eager']]


def test_efficientnet_peer_is_timm_tf_port_with_recipe_optimizer():
  torch = pytest.importorskip('torch')
  from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top
  config, _ = train_throughput.load_recipe('efficientnet_b0', '')
  name, build = torch_peer.reference(config, 10)
  assert name == 'timm tf_efficientnet_b0'
  model = build(10)
  assert type(model.conv_stem).__name__ == 'Conv2dSame'
  ours = jax.eval_shape(functools.partial(
      state_lib.initial_variables, models.from_config(config, 10),
      image_shape=(224, 224, 3)), jax.random.PRNGKey(0))['params']
  assert (sum(p.size for p in jax.tree.leaves(ours)) ==
          sum(p.numel() for p in model.parameters()))
  tx = torch_peer.optimizer(config, model)
  assert isinstance(tx, torch.optim.RMSprop)
  assert tx.defaults['alpha'] == 0.9 and tx.defaults['momentum'] == 0.9
  decayed, plain = tx.param_groups
  assert all(p.ndim > 1 for p in decayed['params'])
  assert plain['weight_decay'] == 0.0
  config.model_kwargs.padding = 'symmetric'
  assert torch_peer.reference(config, 10)[0] == 'torchvision efficientnet_b0'


def test_input_throughput_runs_the_real_train_pipeline():
  from benchmarks import input_throughput  # pylint: disable=g-import-not-at-top
  config = input_throughput._recipe('resnet50')
  config.image_size = 32
  config.batch_size = 4
  jpegs = input_throughput.generated_jpegs(4)
  assert all(j[:2] == b'\xff\xd8' for j in jpegs)  # JPEG start-of-image.
  result = input_throughput.measure(config, jpegs, threads=1, batches=2,
                                    warmup_batches=1)
  assert result['batch_shape'] == [4, 32, 32, 3]
  assert result['images_per_s'] == result['images_per_s_per_core'] > 0
  assert input_throughput.cores_needed(7000, 300) == 24


def test_profile_step_splits_device_time_by_op_and_removes_its_trace(
    tmp_path, monkeypatch):
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  config, _ = train_throughput.load_recipe('lenet5', '')
  config.image_size = 32
  result = profile_step.profile(config, batch=4, steps=2, warmup=1,
                                num_classes=10)
  ops = result['ops']
  assert result['step_ms'] > 0 and result['images_per_s'] > 0
  assert result['device_ms_per_step'] == pytest.approx(
      sum(op['ms_per_step'] for op in ops))
  assert [op['ms_per_step'] for op in ops] == sorted(
      (op['ms_per_step'] for op in ops), reverse=True)
  # Both passes of LeNet-5's layers show up, named by module.
  layers = {(op['layer'].split('/')[0], op['direction']) for op in ops}
  assert {('conv1', 'forward'), ('conv1', 'backward')} <= layers
  assert 'HloModule' in result['hlo_text']
  lines = profile_step.table(result, top=3).splitlines()
  assert lines[0].startswith('untraced: ') and len(lines) > 6
  assert not list(tmp_path.iterdir())


def test_profile_step_reads_gpu_hlo():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  hlo = '''
  %fusion.7 = bf16[256,56,56,64]{3,2,1,0} fusion(%p0, %p1), kind=kLoop, calls=%fused_computation.7, metadata={op_name="jit(train_step)/transpose(jvp(ResNet))/layer1_0/bn1/mul" source_file="x.py"}
  ROOT %custom-call.3 = (bf16[256,56,56,64]{3,2,1,0}, u8[0]{0}) custom-call(%a, %b), custom_call_target="__cudnn$convForward", metadata={op_name="jit(train_step)/jvp(ResNet)/layer1_0/conv1/conv_general_dilated"}
  %input_reduce_fusion = f32[64]{0} fusion(%x), kind=kInput, calls=%fused_reduce
  '''
  found = profile_step.instructions(hlo)
  assert set(found) == {'fusion.7', 'custom-call.3', 'input_reduce_fusion'}
  assert [profile_step.category(found[name]) for name in found] == [
      'elementwise fusion', 'convolution (cuDNN)', 'reduction fusion']
  op_name = found['fusion.7']['op_name']
  assert profile_step.direction(op_name) == 'backward'
  assert profile_step.layer(op_name) == 'layer1_0/bn1'
  assert profile_step.direction(found['custom-call.3']['op_name']) == 'forward'


def test_model_kwargs_flags_parse_literals_and_strings():
  assert train_throughput.parse_model_kwargs(
      ['depthwise=conv', 'width=1.5', 'features_only=True']) == {
          'depthwise': 'conv', 'width': 1.5, 'features_only': True}
  with pytest.raises(app.UsageError, match='is not NAME=VALUE'):
    train_throughput.parse_model_kwargs(['depthwise'])


def test_lowering_flags_are_checked_and_reach_the_isolated_step():
  assert train_throughput.parse_lowering(
      ['max_pool_backward=xla', 'pointwise=conv']) == {
          'max_pool_backward': 'xla', 'pointwise': 'conv'}
  for bad in ('max_pool=xla', 'pointwise=auto', 'depthwise=matmul'):
    with pytest.raises(app.UsageError, match='KIND is one of depthwise, '
                       'pointwise, small_output_conv, max_pool_backward'):
      train_throughput.parse_lowering([bad])

  # The measured step runs in a new process: the config's lowering reaches
  # it and changes how it runs there, not the loss or the counted FLOPs.
  def measured(**choices):
    config, _ = train_throughput.load_recipe('lenet5', '')
    config.image_size = 32
    config.lowering.update(choices)
    row = train_throughput.run(config, 'float32', batch=2, steps=1, warmup=0,
                               num_classes=10, peer='none')
    return row['jaxcnn']

  taps, xla = measured(), measured(max_pool_backward='xla')
  assert taps['lowering'] == {
      'depthwise': 'taps', 'pointwise': 'matmul',
      'small_output_conv': 'im2col', 'max_pool_backward': 'taps'}
  assert xla['lowering'] == {**taps['lowering'], 'max_pool_backward': 'xla'}
  assert taps['loss'] == xla['loss']
  assert taps['flops_per_step'] == xla['flops_per_step']


def test_model_flops_count_the_network_not_the_cpu_lowering():
  # ResNet-18 at 32 px has 3x3 convolutions on 2x2 and 1x1 maps: XLA counts
  # the taps of each output pixel that touch the image; the CPU's im2col
  # also multiplies those that fall on padding (a 2x2 map: all 9, not 4).
  config, _ = train_throughput.load_recipe('resnet18', 'resnet18_cifar10')
  config.num_classes = 10

  def step_flops(**choices):
    config.lowering.update(choices)
    step = train_throughput.build_train_step(config, 2, 10, abstract=True)
    return train_throughput.step_flops(
        jax.jit(step.step_fn).lower(step.state, step.data))

  counted = train_throughput.model_flops(config, 2, 10)
  assert config.lowering.small_output_conv == 'auto'  # Left as it was.
  xla = step_flops(pointwise='conv', small_output_conv='conv',
                   depthwise='conv', max_pool_backward='xla')
  cpu = step_flops(pointwise='auto', small_output_conv='auto',
                   depthwise='auto', max_pool_backward='auto')
  assert counted == xla
  assert cpu > 1.01 * xla


def test_depthwise_layers_times_each_layer_of_the_network_per_implementation(
    monkeypatch):
  from benchmarks import depthwise_layers  # pylint: disable=g-import-not-at-top
  found = depthwise_layers.depthwise_layers('efficientnet_b0', 32, 2,
                                            jnp.float32)
  # B0's 16 blocks have one depthwise layer each; the stem halves 32 px.
  assert sum(found.values()) == 16 and len(found) == 12
  assert found[((2, 16, 16, 32), 3, 1, 'SAME')] == 1
  assert found[((2, 1, 1, 1152), 5, 1, 'SAME')] == 3
  two_layers = collections.Counter({((1, 8, 8, 16), 3, 2, 'SAME'): 1,
                                    ((1, 4, 4, 24), 5, 1, 'SAME'): 3})
  monkeypatch.setattr(depthwise_layers, 'depthwise_layers',
                      lambda *args: two_layers)
  rows = depthwise_layers.measure('efficientnet_b0', 32, 1, jnp.float32,
                                  ['conv', 'taps', 'pallas'], steps=1)
  assert [(row['input_shape'], row['count']) for row in rows] == [
      ([1, 8, 8, 16], 1), ([1, 4, 4, 24], 3)]
  for row in rows:
    assert set(row['seconds']) == {'conv', 'taps'}
    assert all(seconds > 0 for seconds in row['seconds'].values())
    assert row['errors']['pallas'].startswith('ValueError: depthwise=')
  # float32 x and y, 3 times each: 8x8x16 in, 4x4x16 out (stride 2);
  # 4x4x24 in and out.
  assert [row['least_bytes'] for row in rows] == [
      3 * (1024 + 256) * 4, 3 * (384 + 384) * 4]
  report = depthwise_layers.table(rows, ['conv', 'taps', 'pallas'], 1e9)
  assert 'taps: ' in report and 'x conv over the network' in report
  assert "pallas not timed: ValueError: depthwise='pallas' is a GPU" in report
  totals = depthwise_layers.network_seconds(rows)
  assert set(totals) == {'conv', 'taps'}
  assert totals['taps'] == pytest.approx(
      rows[0]['seconds']['taps'] + 3 * rows[1]['seconds']['taps'])
  # Totals weigh each layer by its count: taps wins the first layer, conv
  # the network.
  weighted = [{'seconds': {'conv': 3.0, 'taps': 1.0}, 'count': 1},
              {'seconds': {'conv': 1.0, 'taps': 2.0}, 'count': 3}]
  assert depthwise_layers.network_seconds(weighted) == {'conv': 6.0,
                                                        'taps': 7.0}
  assert depthwise_layers.fastest(weighted) == 'conv'
  # An implementation missing from a layer has no network total.
  del rows[1]['seconds']['taps']
  assert set(depthwise_layers.network_seconds(rows)) == {'conv'}
  assert depthwise_layers.fastest(rows) == 'conv'
  seconds = rows[0]['seconds']['conv']
  assert f'| {seconds * 1e3:.2f} ({15360 / seconds / 1e9:.0%}) |' in report
  bandwidth, source = depthwise_layers.measured_bandwidth(1 << 20, repeats=2)
  assert bandwidth > 0 and source.startswith('fastest of 2 runs of x + 1')


def test_nasnet_large_peer_is_timm_without_the_recipes_extras():
  pytest.importorskip('torch')
  from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top
  config, _ = train_throughput.load_recipe('nasnet_large', '')
  with pytest.raises(torch_peer.PeerUnavailable,
                     match='--model_kwarg=aux_head=False '
                           '--model_kwarg=drop_path_rate=0.0 '
                           '--model_kwarg=padding=timm'):
    torch_peer.reference(config, 10)
  config.model_kwargs.update(dict(aux_head=False, drop_path_rate=0.0,
                                  padding='timm'))
  name, build = torch_peer.reference(config, 10)
  assert name == 'timm nasnetalarge'
  ours = jax.eval_shape(functools.partial(
      state_lib.initial_variables, models.from_config(config, 10),
      image_shape=(331, 331, 3)), jax.random.PRNGKey(0))['params']
  # 88,753,150 with 1000 classes; the head is 4032 x 10 + 10 here.
  assert (sum(p.size for p in jax.tree.leaves(ours)) ==
          sum(p.numel() for p in build(10).parameters()) ==
          88_753_150 - 990 * 4033)


def _efficientdet_d0(**model_kwargs):
  config, recipe = train_throughput.load_recipe('efficientdet_d0', '')
  assert recipe == 'efficientdet_d0' and config.task == 'detection'
  config.image_size = 128
  config.model_kwargs.update(model_kwargs)
  return config


def _param_count(config, num_classes: int) -> int:
  params = jax.eval_shape(functools.partial(
      state_lib.initial_variables, models.from_config(config, num_classes),
      image_shape=(config.image_size, config.image_size, 3)),
                          jax.random.PRNGKey(0))['params']
  return sum(p.size for p in jax.tree.leaves(params))


def test_efficientdet_peer_is_effdets_network_of_the_same_padding():
  pytest.importorskip('torch')
  from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top
  config = _efficientdet_d0()
  assert train_throughput.default_num_classes(config) == 90  # COCO's ids.
  name, build = torch_peer.reference(config, 2)
  assert name == 'effdet tf_efficientdet_d0'
  # 3,880,067 with 90 classes (tests/models); the class head's pointwise
  # conv has 9 x (90 - 2) x (64 + 1) fewer parameters here.
  assert (_param_count(config, 2) ==
          sum(p.numel() for p in build(2).parameters()) ==
          3_880_067 - 9 * 88 * 65)
  config.model_kwargs.padding = 'symmetric'
  with pytest.raises(torch_peer.PeerUnavailable,
                     match="compare with --model_kwarg=backbone_kwargs="
                           "{'bn_momentum': 0.9, 'bn_epsilon': 1e-05} "
                           '--model_kwarg=redundant_bias=False'):
    torch_peer.reference(config, 2)
  config.model_kwargs.update(
      redundant_bias=False,
      backbone_kwargs={'bn_momentum': 0.9, 'bn_epsilon': 1e-5})
  name, build = torch_peer.reference(config, 2)
  assert name == 'effdet efficientdet_d0'
  assert (_param_count(config, 2) ==
          sum(p.numel() for p in build(2).parameters()) ==
          3_877_763 - 9 * 88 * 65)


def test_effdet_peer_trains_with_effdets_loss_on_the_tasks_batch():
  torch = pytest.importorskip('torch')
  from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top
  # The FPN and heads' width and depth are mirrored in effdet's config.
  config = _efficientdet_d0(fpn_channels=16, fpn_repeats=1, head_repeats=1)
  images, targets = torch_peer._synthetic_batch(config, 2, 2,
                                                torch.device('cpu'))
  two_classes = config.copy_and_resolve_references()
  two_classes.num_classes = 2
  batch = tasks.create(two_classes).dummy_batch(
      models.from_config(config, 2), 2, 128)
  assert images.is_contiguous(memory_format=torch.channels_last)
  np.testing.assert_array_equal(images.permute(0, 2, 3, 1), batch['image'])
  np.testing.assert_array_equal(targets['bbox'], batch['boxes'])
  assert targets['cls'].numpy().tolist() == [
      [c + 1 if valid else -1 for c, valid in zip(classes, valids)]
      for classes, valids in zip(batch['classes'], batch['box_valid'])]
  result = torch_peer.measure(config, 2, 1, 0, num_classes=2,
                              compile_mode='off')
  assert result['peer_model'] == 'effdet tf_efficientdet_d0'
  assert result['parameters'] == _param_count(config, 2)
  assert result['peer_mode'] == 'eager'
  assert result['step_s'] > 0 and 0 < result['loss'] < 1e3
  # effdet's NMS is torchvision's compiled op, missing where it does not load.
  if 'postprocess_skipped' in result:
    assert "torchvision's compiled NMS does not load" in result[
        'postprocess_skipped']
  else:
    assert result['postprocess_s'] > 0


def test_detection_benchmark_times_the_step_and_the_post_processing():
  # A narrow 1-block-per-stage backbone and levels 3-5 keep the compilation
  # short; effdet has no such network, so the peer says what to change.
  config = _efficientdet_d0(fpn_channels=16, fpn_repeats=1, head_repeats=1,
                            backbone_kwargs={'depth': 0.1, 'width': 0.25},
                            max_level=5)
  config.image_size = 64
  config.max_candidates = 100
  config.lowering.update(lowering.XLA.as_dict())
  row = train_throughput.run(config, 'float32', batch=2, steps=1, warmup=0,
                             num_classes=2, isolate=False)
  ours = row['jaxcnn']
  assert set(ours) == _JAX_FIELDS | {'postprocess_s'}
  assert ours['step_s'] > 0 and ours['postprocess_s'] > 0
  assert 0 < ours['loss'] < 1e3
  assert ours['parameters'] == _param_count(config, 2)
  assert row['peer'] == {'skipped': (
      "effdet's tf_efficientdet_d0 is the variant's network: compare with "
      '--model_kwarg=backbone_kwargs=None --model_kwarg=max_level=7')}
  lines = train_throughput.table({'results': [row]}).splitlines()
  assert lines[-2] == (
      'float32   post-processing (top-k + NMS) per batch: jaxcnn '
      f'{ours["postprocess_s"] * 1e3:.1f} ms')


def _fake_search(workdir, algorithm, accuracies, population, seconds):
  from jaxcnn.search import report
  records = [{'id': i, 'parent': None, 'mutation': 'random',
              'genotype': f'g{i}', 'accuracy': a, 'params': 1000,
              'macs': 2e6, 'train_seconds': 3.0,
              'workdir': f'children/{i:06d}'}
             for i, a in enumerate(accuracies)]
  workdir.mkdir(parents=True)
  report.write(str(workdir), records, population, algorithm, 4, seconds)
  (workdir / 'search.json').write_text(json.dumps({
      'config': {}, 'elapsed_seconds': seconds,
      'state': {'algorithm': algorithm, 'num_children': 4,
                'population': population,
                'history': [{'id': r['id'], 'fitness': r['accuracy']}
                            for r in records]}}))


def test_nas_seeds_tables_each_search_and_each_algorithm_over_seeds(
    tmp_path):
  from benchmarks import nas_seeds
  assert [nas_seeds.algorithm_of(f'configs/nas/digits_{a}.py')
          for a in ('evolution', 'random')] == ['evolution', 'random']
  _fake_search(tmp_path / 'seed0' / 'evolution', 'evolution',
               [0.5, 0.7, 0.9, 0.8], [2, 3], 1800.0)
  _fake_search(tmp_path / 'seed1' / 'evolution', 'evolution',
               [0.6, 0.7, 0.5, 0.6], [1, 3], 900.0)
  _fake_search(tmp_path / 'seed0' / 'random', 'random',
               [0.5, 0.6, 0.4], [0, 1, 2], 3600.0)
  searches = {(a, s): nas_seeds.search_numbers(
      str(tmp_path / f'seed{s}' / a))
              for a, s in (('evolution', 0), ('evolution', 1), ('random', 0))}
  lines = nas_seeds.table(searches).splitlines()
  assert lines[2:5] == [
      '| evolution | 0 | 4/4 | 0.9000 | 0.8500 | 8.0 | 30.0 |',
      '| evolution | 1 | 4/4 | 0.7000 | 0.6500 | 16.0 | 15.0 |',
      '| random | 0 | 3/4 | 0.6000 | 0.5000 | 3.0 | 60.0 |']
  best_std, population_std = (statistics.stdev([0.9, 0.7]),
                              statistics.stdev([0.85, 0.65]))
  assert lines[-2:] == [
      f'| evolution | 2 | 0.8000 ± {best_std:.4f} | 0.7500 ± '
      f'{population_std:.4f} | 12.0 | 30.0 |',
      '| random | 1 | 0.6000 ± 0.0000 | 0.5000 ± 0.0000 | 3.0 | 60.0 |']
