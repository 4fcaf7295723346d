"""The Pallas depthwise kernels: the tiles' edges, the kernel gradient's
partial sums, and the lowering to Triton for a real network (no GPU here:
the kernels run in the Pallas interpreter, the lowering is for CUDA)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.kernels import depthwise_conv
from jaxcnn.models import layers
from jaxcnn.models import lowering


def _grouped_conv(x, kernel, pads, stride):
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), pads,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1], precision='highest')


def _assert_matches_grouped_conv(shape, k, stride, pads):
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 1, shape[-1])), jnp.float32)
  out, vjp = jax.vjp(
      lambda x, kernel: depthwise_conv.depthwise_conv(x, kernel, pads, stride,
                                                      True), x, kernel)
  reference, reference_vjp = jax.vjp(
      lambda x, kernel: _grouped_conv(x, kernel, pads, stride), x, kernel)
  assert out.shape == reference.shape
  np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
  grad = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
  for ours, exact in zip(vjp(grad), reference_vjp(grad)):
    np.testing.assert_allclose(ours, exact, rtol=1e-4, atol=1e-4)


def test_tiles_cover_channels_and_columns_beyond_one_tile():
  # 130 channels: two channel tiles (128 + 2 masked); 37 columns: several
  # column tiles with a masked edge, in all three kernels.
  _assert_matches_grouped_conv((2, 11, 37, 130), 3, 2, ((0, 1), (1, 1)))


def test_kernel_gradient_adds_the_partial_sums_of_programs_sharing_rows(
    monkeypatch):
  # 3 programs for 2 x 7 = 14 output rows: 5 rows each, the last program's
  # sixth row is past the end and must add nothing.
  monkeypatch.setattr(depthwise_conv, '_KERNEL_GRAD_PROGRAMS', 3)
  _assert_matches_grouped_conv((2, 14, 40, 24), 5, 2, ((1, 2), (1, 2)))


def test_efficientnet_b0_with_pallas_depthwise_lowers_to_triton_kernels(
    monkeypatch):
  # The real train-step gradient of B0 in bf16, lowered for CUDA: Pallas
  # builds every kernel's Triton IR here, so tiles and indexing Triton
  # rejects fail on this machine, not on the GPU. 16 depthwise layers x
  # (output, input gradient, kernel gradient), no grouped convolution, and
  # no padded copy: the kernels mask the padding.
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  model = models.create('efficientnet_b0', num_classes=10,
                        dtype=jnp.bfloat16,
                        lowering=lowering.Lowering(depthwise='pallas'))
  images = jax.ShapeDtypeStruct((8, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(images.shape),
                         train=False))

  def loss(params, batch_stats, images):
    logits, _ = model.apply(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        mutable=['batch_stats'], rngs={'dropout': jax.random.key(1)})
    return logits.astype(jnp.float32).sum()

  # The GPU Triton compiles for (jax >= 0.12 asks, as none is attached).
  h100 = jax.sharding.AbstractMesh((1,), ('data',), abstract_device=(
      jax.sharding.AbstractDevice(device_kind='NVIDIA H100 80GB HBM3',
                                  num_cores=None, platform='gpu')))
  with jax.sharding.use_abstract_mesh(h100):
    lowered = jax.jit(jax.grad(loss)).trace(
        variables['params'], variables['batch_stats'], images).lower(
            lowering_platforms=('cuda',))
  hlo = lowered.as_text()
  assert hlo.count('__gpu$xla.gpu.triton') == 16 * 3
  groups = re.findall(r'feature_group_count = (\d+)', hlo)
  assert groups and set(groups) == {'1'}  # Stem, 1x1 and head convolutions.
  assert 'stablehlo.pad' not in hlo


def test_pallas_depthwise_refuses_to_run_off_gpus():
  module = layers.DepthwiseConv(3, implementation='pallas')
  with pytest.raises(ValueError, match="depthwise='pallas' is a GPU kernel "
                     r"\(Pallas/Triton\) and this process runs on cpu; use "
                     "'auto', 'taps' or 'conv' here."):
    module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 4)))
