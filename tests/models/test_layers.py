"""Pooling helpers against hand-computed torch semantics; the depthwise,
convolution-as-matmul and max-pool-backward implementations against XLA's
own."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import layers

pytestmark = pytest.mark.cost_seconds(190)


def _grid(height, width):
  """[1, height, width, 1] image whose pixel (h, w) is 10 * h + w."""
  h, w = np.mgrid[:height, :width]
  return jnp.asarray((10 * h + w)[None, :, :, None], jnp.float32)


@pytest.mark.parametrize('size, window, stride, padding, ceil_mode, expected', [
    (55, 3, 2, 0, False, 27),
    (55, 3, 2, 0, True, 27),
    (13, 3, 2, 0, True, 6),
    (14, 3, 2, 0, False, 6),
    (14, 3, 2, 0, True, 7),
    (54, 3, 2, 0, True, 27),  # SqueezeNet 1.0 at 224: 54 -> 27, not 26.
    (6, 3, 2, 0, True, 3),
    (6, 3, 2, 0, False, 2),
    (112, 3, 2, 1, False, 56),  # ResNet stem.
    # ceil mode would give 4, but torch drops a window starting in padding.
    (5, 2, 2, 1, True, 3),
])
def test_max_pool_output_size(size, window, stride, padding, ceil_mode,
                              expected):
  y = layers.max_pool(jnp.zeros((2, size, size, 3)), window, stride, padding,
                      ceil_mode)
  assert y.shape == (2, expected, expected, 3)


def test_max_pool_ceil_mode_values():
  # 6x6 grid, 3x3/2 ceil windows cover rows/cols [0,2], [2,4], [4,5]; the grid
  # increases along both axes, so each max is the window's bottom-right pixel.
  y = layers.max_pool(_grid(6, 6), 3, 2, ceil_mode=True)
  np.testing.assert_array_equal(
      y[0, :, :, 0], [[22, 24, 25], [42, 44, 45], [52, 54, 55]])


def test_max_pool_dropped_window_values():
  x = jnp.asarray([1., 5., 2., 3., 4.]).reshape(1, 1, 5, 1)
  y = layers.max_pool(x, 2, 2, padding=1, ceil_mode=True)
  # Width windows [-1, 0], [1, 2], [3, 4]; height 1 -> 1 window [-1, 0].
  np.testing.assert_array_equal(y[0, 0, :, 0], [1., 5., 4.])


def test_max_pool_pads_with_minus_infinity():
  x = -1.0 - _grid(4, 4)  # All negative: zero padding would leak zeros.
  y = layers.max_pool(x, 3, 2, padding=1)
  np.testing.assert_array_equal(y[0, :, :, 0], [[-1, -2], [-11, -12]])


def test_adaptive_avg_pool_non_divisible():
  # Height 5 -> 3 bins [0,2) [1,4) [3,5): mean rows 0.5, 2, 3.5.
  # Width 7 -> 2 bins [0,4) [3,7): mean cols 1.5, 4.5.
  y = layers.adaptive_avg_pool(_grid(5, 7), (3, 2))
  np.testing.assert_allclose(
      y[0, :, :, 0], [[6.5, 9.5], [21.5, 24.5], [36.5, 39.5]], rtol=1e-6)


def test_adaptive_avg_pool_divisible_and_upsampling():
  # 4x4 -> 2x2: plain 2x2 means.
  y = layers.adaptive_avg_pool(_grid(4, 4), (2, 2))
  np.testing.assert_allclose(y[0, :, :, 0], [[5.5, 7.5], [25.5, 27.5]])
  # 2x1 -> 3x2: height bins [0,1) [0,2) [1,2); width 1 pixel repeated.
  y = layers.adaptive_avg_pool(_grid(2, 1), (3, 2))
  np.testing.assert_allclose(y[0, :, :, 0], [[0, 0], [5, 5], [10, 10]])
  # 1x1 -> 6x6 (AlexNet on small inputs) replicates the pixel.
  x = jnp.arange(4.).reshape(1, 1, 1, 4)
  y = layers.adaptive_avg_pool(x, (6, 6))
  np.testing.assert_array_equal(y, jnp.broadcast_to(x, (1, 6, 6, 4)))


def test_global_avg_pool_keeps_dtype():
  x = jnp.ones((2, 3, 5, 4), jnp.bfloat16)
  y = layers.global_avg_pool(x)
  assert y.shape == (2, 4) and y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y, 1)


def test_pooling_refuses_empty_feature_maps():
  empty = jnp.zeros((2, 0, 3, 8))
  for pool in (layers.global_avg_pool,
               lambda x: layers.adaptive_avg_pool(x, (6, 6))):
    with pytest.raises(layers.ImagesTooSmallError,
                       match=r'feature maps are empty \(\(2, 0, 3, 8\)\)'):
      pool(empty)


def _random(shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).normal(size=shape),
                     jnp.float32)


def _assert_same_function(ours, theirs, x):
  """Same parameters and initial values (weights move freely between the
  two), same outputs and gradients in float32; returns the output shape."""
  params = ours.init(jax.random.PRNGKey(0), x)
  jax.tree.map(np.testing.assert_array_equal, params,
               theirs.init(jax.random.PRNGKey(0), x))
  out, our_vjp = jax.vjp(ours.apply, params, x)
  reference, their_vjp = jax.vjp(theirs.apply, params, x)
  assert out.shape == reference.shape
  np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
  grad = _random(out.shape, seed=1)
  for mine, exact in zip(jax.tree.leaves(our_vjp(grad)),
                         jax.tree.leaves(their_vjp(grad))):
    np.testing.assert_allclose(mine, exact, rtol=1e-4, atol=1e-4)
  return out.shape


def _depthwise_and_grouped_conv(kernel_size, stride, padding, implementation,
                                dtype=jnp.float32):
  depthwise = layers.DepthwiseConv(
      kernel_size, stride, padding, implementation=implementation,
      dtype=dtype)
  grouped = nn.Conv(6, (kernel_size, kernel_size), stride, padding=padding,
                    feature_group_count=6, use_bias=False, dtype=dtype)
  return depthwise, grouped


@pytest.fixture
def interpreted_pallas(monkeypatch):
  """DepthwiseConv's 'pallas' kernels run in the Pallas interpreter (this
  machine has no GPU; the GPU glue is tested in tests/kernels)."""
  from jaxcnn.kernels import depthwise_conv
  monkeypatch.setattr(
      layers, '_depthwise_pallas',
      lambda x, kernel, pads, stride: depthwise_conv.depthwise_conv(
          x, kernel, pads, stride, True))


@pytest.mark.parametrize('implementation', ['taps', 'conv', 'pallas'])
@pytest.mark.parametrize('kernel_size, stride, padding', [
    (3, 1, 'SAME'), (3, 2, 'SAME'), (5, 2, 'SAME'),  # TF: extra pad low/right.
    (5, 1, ((2, 2), (2, 2))), (3, 2, ((1, 1), (1, 1))),
    (3, 2, 'VALID'), (5, 2, ((2, 0), (0, 1))),  # Rows no window covers.
])
def test_depthwise_conv_is_the_grouped_convolution(kernel_size, stride,
                                                    padding, implementation,
                                                    interpreted_pallas):
  depthwise, grouped = _depthwise_and_grouped_conv(kernel_size, stride,
                                                   padding, implementation)
  _assert_same_function(depthwise, grouped, _random((2, 15, 15, 6)))


@pytest.mark.parametrize('implementation', ['taps', 'pallas'])
def test_depthwise_in_bfloat16_rounds_like_the_convolution(
    implementation, interpreted_pallas):
  depthwise, grouped = _depthwise_and_grouped_conv(3, 1, 'SAME',
                                                   implementation,
                                                   jnp.bfloat16)
  x = _random((2, 9, 9, 6))
  params = depthwise.init(jax.random.PRNGKey(0), x)
  ours = depthwise.apply(params, x)
  assert ours.dtype == jnp.bfloat16
  exact = grouped.apply(params, x.astype(jnp.bfloat16).astype(jnp.float32))
  # bf16 operands, float32 sums: only the final rounding to bf16 is off.
  np.testing.assert_allclose(ours.astype(jnp.float32), exact, rtol=2**-8,
                             atol=1e-6)


@pytest.mark.parametrize('implementation', ['taps', 'pallas'])
def test_depthwise_gradients_in_bfloat16_round_like_float32_ones(
    implementation, interpreted_pallas):
  depthwise, _ = _depthwise_and_grouped_conv(5, 2, 'SAME', implementation,
                                             jnp.bfloat16)
  _, grouped = _depthwise_and_grouped_conv(5, 2, 'SAME', 'conv')
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 6)), jnp.float32)
  params = depthwise.init(jax.random.PRNGKey(0), x)
  out, vjp = jax.vjp(depthwise.apply, params, x)
  grad = jnp.asarray(rng.normal(size=out.shape), jnp.bfloat16)

  def rounded(t):
    return t.astype(jnp.bfloat16).astype(jnp.float32)

  _, exact_vjp = jax.vjp(grouped.apply, jax.tree.map(rounded, params),
                         rounded(x))
  for ours, exact in zip(jax.tree.leaves(vjp(grad)),
                         jax.tree.leaves(exact_vjp(grad.astype(jnp.float32)))):
    assert ours.dtype == jnp.float32  # The parameters' and inputs' dtype.
    np.testing.assert_allclose(ours, exact, rtol=2**-7,
                               atol=2**-8 * float(jnp.abs(exact).max()))


def test_depthwise_conv_refuses_an_unknown_implementation():
  module = layers.DepthwiseConv(3, implementation='cudnn')
  with pytest.raises(ValueError, match="Unknown depthwise implementation "
                     "'cudnn'; choose one of conv, taps, pallas."):
    module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 4)))


def _conv(features, kernel_size, stride, padding, lowering, use_bias=False,
          dtype=jnp.float32):
  return nn.Conv(features, (kernel_size, kernel_size), stride, padding=padding,
                 use_bias=use_bias, dtype=dtype,
                 bias_init=nn.initializers.normal(1.0),
                 conv_general_dilated_cls=lowering)


_AS_MATMULS = functools.partial(layers.ConvAsMatmul, pointwise=True,
                                small_output=True)


def _convolutions(module, x):
  params = module.init(jax.random.PRNGKey(0), x)
  return str(jax.make_jaxpr(module.apply)(params, x)).count(
      'conv_general_dilated')


@pytest.mark.parametrize('stride, padding, use_bias', [
    (1, 'SAME', False), (2, 'SAME', True), (1, 0, True), (2, 'VALID', False),
    (2, ((0, 0), (0, 0)), False),
])
def test_pointwise_matmul_is_the_1x1_convolution(stride, padding, use_bias):
  ours = _conv(5, 1, stride, padding, _AS_MATMULS, use_bias)
  theirs = _conv(5, 1, stride, padding, None, use_bias)
  x = _random((2, 15, 15, 6))
  assert _convolutions(ours, x) == 0 and _convolutions(theirs, x) == 1
  size = 15 if stride == 1 else 8
  assert _assert_same_function(ours, theirs, x) == (2, size, size, 5)


@pytest.mark.parametrize('size, kernel_size, stride, padding, expected', [
    (1, 3, 1, 'SAME', 1),  # ResNet-18's last stage at 32 px.
    (2, 3, 1, 1, 2),
    (2, 3, 2, 1, 1),
    (4, 3, 2, ((0, 1), (0, 1)), 2),  # TF "SAME" at stride 2.
    (3, 5, 1, 2, 3),
    (12, 7, 2, 3, 6),  # A ResNet stem on 12 px images.
])
def test_small_output_im2col_is_the_convolution(size, kernel_size, stride,
                                                padding, expected):
  ours = _conv(5, kernel_size, stride, padding, _AS_MATMULS, use_bias=True)
  theirs = _conv(5, kernel_size, stride, padding, None, use_bias=True)
  x = _random((2, size, size, 6))
  assert _convolutions(ours, x) == 0
  assert _assert_same_function(ours, theirs, x) == (2, expected, expected, 5)


def test_small_output_im2col_multiplies_only_taps_that_touch_the_image():
  # A 3x3 "SAME" kernel on a 1x1 map sees the image through its centre tap
  # only: the matmul contracts over C_in, not 9 * C_in.
  module = _conv(5, 3, 1, 'SAME', _AS_MATMULS)
  x = _random((2, 1, 1, 6))
  params = module.init(jax.random.PRNGKey(0), x)
  dot, = [e for e in jax.make_jaxpr(module.apply)(params, x).eqns
          if e.primitive.name == 'dot_general']
  assert [v.aval.shape for v in dot.invars] == [(2, 6), (6, 5)]
  kernel_grad = jax.grad(lambda p: module.apply(p, x).sum())(params)
  kernel_grad = kernel_grad['params']['kernel']
  assert float(jnp.abs(kernel_grad[1, 1]).sum()) > 0
  np.testing.assert_array_equal(kernel_grad.at[1, 1].set(0), 0)


@pytest.mark.parametrize('kernel_size', [1, 3])
def test_conv_as_matmul_in_bfloat16_rounds_like_the_convolution(kernel_size):
  ours = _conv(5, kernel_size, 1, 'SAME', _AS_MATMULS, dtype=jnp.bfloat16)
  theirs = _conv(5, kernel_size, 1, 'SAME', None, dtype=jnp.bfloat16)
  x = _random((2, 9 if kernel_size == 1 else 2, 9, 64))
  params = ours.init(jax.random.PRNGKey(0), x)
  out, reference = ours.apply(params, x), theirs.apply(params, x)
  assert _convolutions(ours, x) == 0
  assert out.dtype == reference.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32),
                             reference.astype(jnp.float32), rtol=2**-7,
                             atol=2**-7)


@pytest.mark.parametrize(
    'size, kernel_size, stride, padding, dilation, groups', [
        (7, 3, 1, 'SAME', 1, 1),  # Output not smaller than the kernel.
        (3, 3, 1, 'SAME', 1, 1),  # Output as large as the kernel.
        (7, 1, 1, 1, 1, 1),  # Padded 1x1.
        (7, 1, 1, 0, 2, 1),  # Dilated input.
        (7, 1, 1, 'SAME', 1, 2),  # Grouped.
        (2, 3, 1, 'SAME', 1, 2),  # Grouped, small output.
        (1, 3, 3, ((3, 0), (3, 0)), 1, 1),  # Small, but no tap sees the image.
    ])
def test_conv_as_matmul_leaves_other_convolutions_to_xla(
    size, kernel_size, stride, padding, dilation, groups):
  x = _random((2, size, size, 6))
  module, reference = (
      nn.Conv(4, (kernel_size, kernel_size), stride, padding=padding,
              input_dilation=dilation, feature_group_count=groups,
              conv_general_dilated_cls=lowering)
      for lowering in (_AS_MATMULS, None))
  assert _convolutions(module, x) == 1
  params = module.init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(module.apply(params, x),
                                reference.apply(params, x))


@pytest.mark.parametrize('window, stride, padding, ceil_mode', [
    (3, 2, 0, True),  # SqueezeNet.
    (3, 2, 1, False),  # ResNet stem.
    (3, 2, 0, False),  # AlexNet.
    (2, 2, 0, False),  # LeNet.
    (3, 1, 1, False),  # Overlapping windows at stride 1.
])
def test_max_pool_taps_backward_is_select_and_scatter(window, stride, padding,
                                                      ceil_mode):
  rng = np.random.RandomState(0)
  # Integer values: many ties, which go to the first maximum in both; the
  # sums of integer gradients are exact, so the two must be identical.
  x = jnp.asarray(rng.randint(0, 4, size=(2, 13, 14, 3)), jnp.float32)

  def pool(backward):
    return functools.partial(layers.max_pool, window=window, stride=stride,
                             padding=padding, ceil_mode=ceil_mode,
                             backward=backward)

  out, taps_vjp = jax.vjp(pool('taps'), x)
  reference, xla_vjp = jax.vjp(pool('xla'), x)
  np.testing.assert_array_equal(out, reference)
  grad = jnp.asarray(rng.randint(-3, 4, size=out.shape), jnp.float32)
  np.testing.assert_array_equal(taps_vjp(grad)[0], xla_vjp(grad)[0])
  assert float(jnp.abs(taps_vjp(grad)[0]).sum()) > 0
  # bf16 inputs get bf16 gradients, as with autodiff.
  bf16_grad = jax.vjp(pool('taps'), x.astype(jnp.bfloat16))[1](
      grad.astype(jnp.bfloat16))[0]
  assert bf16_grad.dtype == jnp.bfloat16
  np.testing.assert_array_equal(bf16_grad.astype(jnp.float32),
                                xla_vjp(grad)[0])


def test_max_pool_taps_backward_has_no_select_and_scatter():
  x = jnp.ones((1, 8, 8, 2))

  def scatters(backward):
    return str(jax.make_jaxpr(jax.grad(lambda x: layers.max_pool(
        x, 3, 2, backward=backward).sum()))(x)).count('select_and_scatter')

  assert scatters('taps') == 0
  assert scatters('xla') == 1
  with pytest.raises(ValueError, match="Unknown max_pool_backward "
                     "implementation 'cudnn'; choose one of xla, taps."):
    layers.max_pool(x, 3, 2, backward='cudnn')
