"""How a network's layers run on a platform: one policy per run.

A model says what its network is (`lowering.conv(...)`, a depthwise
convolution, a max pool); its `lowering` field, a `Lowering`, says how XLA
computes those layers. Every choice computes the same function with the same
parameters (to float rounding), so weights move freely between them:

  depthwise: 'conv' (XLA's grouped convolution), 'taps' (fused sums of
    shifted, scaled slices, gradients too) or 'pallas' (Pallas/Triton GPU
    kernels, jaxcnn/kernels/); layers.DepthwiseConv.
  pointwise: 1x1 convolutions as 'conv' (XLA's) or 'matmul' (one
    [pixels, C_in] x [C_in, C_out] matmul); layers.ConvAsMatmul.
  small_output_conv: convolutions whose output is smaller than their kernel
    as 'conv' (XLA's) or 'im2col' (one matmul over the kernel taps that touch
    the image); layers.ConvAsMatmul.
  max_pool_backward: 'xla' (select-and-scatter) or 'taps' (one fused pass
    over the window's taps); layers.max_pool.

`Lowering()` is XLA's own everywhere, what a model built without a policy
runs. A run picks its policy once, `for_platform(jax.default_backend(),
**config.lowering)`, where 'auto' is the fastest measured on that platform
(benchmarks/RESULTS.md) and XLA's own where nothing was measured.
"""

import dataclasses
import functools
import types
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax

from jaxcnn.models import layers

ModuleDef = Callable[..., nn.Module]

# Each kind's choices, XLA's own first.
CHOICES = types.MappingProxyType({
    'depthwise': layers.DEPTHWISE_IMPLEMENTATIONS,
    'pointwise': ('conv', 'matmul'),
    'small_output_conv': ('conv', 'im2col'),
    'max_pool_backward': layers.MAX_POOL_BACKWARDS,
})
AUTO = 'auto'
# What 'auto' picks per platform, measured (benchmarks/RESULTS.md).
FASTEST = types.MappingProxyType({
    'cpu': types.MappingProxyType({
        'depthwise': 'taps', 'pointwise': 'matmul',
        'small_output_conv': 'im2col', 'max_pool_backward': 'taps'}),
})
# Model fields that runs and checkpoints recorded before the lowering was a
# config of its own; they are lowering choices now.
LEGACY_MODEL_FIELDS = ('depthwise', 'pointwise')


@dataclasses.dataclass(frozen=True)
class Lowering:
  """One choice per kind of layer (CHOICES); builds the layers models use."""
  depthwise: str = 'conv'
  pointwise: str = 'conv'
  small_output_conv: str = 'conv'
  max_pool_backward: str = 'xla'

  def __post_init__(self):
    for kind, choices in CHOICES.items():
      if getattr(self, kind) not in choices:
        raise ValueError(
            f'Unknown {kind} lowering {getattr(self, kind)!r}; choose one of '
            f'{", ".join(choices)}.')

  def as_dict(self) -> dict[str, str]:
    return dataclasses.asdict(self)

  def __str__(self) -> str:
    return ', '.join(f'{kind}={value}'
                     for kind, value in self.as_dict().items())

  @property
  def conv(self) -> ModuleDef:
    """nn.Conv, with ConvAsMatmul for the convolutions chosen as matmuls."""
    as_matmul = self.pointwise == 'matmul'
    as_im2col = self.small_output_conv == 'im2col'
    if not (as_matmul or as_im2col):
      return nn.Conv
    return functools.partial(
        nn.Conv, conv_general_dilated_cls=functools.partial(
            layers.ConvAsMatmul, pointwise=as_matmul, small_output=as_im2col))

  @property
  def depthwise_conv(self) -> ModuleDef:
    """layers.DepthwiseConv with this implementation."""
    return functools.partial(layers.DepthwiseConv,
                             implementation=self.depthwise)

  @property
  def max_pool(self) -> Callable[..., jax.Array]:
    """layers.max_pool with this backward pass."""
    return functools.partial(layers.max_pool, backward=self.max_pool_backward)


XLA = Lowering()

# The TF references' depthwise init: their (k, k, C, 1) kernels' fan_out is
# k * k, which Flax's (k, k, 1, C) layout has as its fan_in.
tf_depthwise_kernel_init = jax.nn.initializers.variance_scaling(
    2.0, 'fan_in', 'normal')


def tf_conv_layers(lowering: Lowering, train: bool, bn_momentum: float,
                   bn_epsilon: float, dtype: Any, param_dtype: Any
                   ) -> tuple[ModuleDef, ModuleDef, ModuleDef]:
  """(conv, depthwise, norm) of the TF-origin networks (EfficientNet,
  NASNet): bias-free convolutions with the TF references' initialisers
  (normal(0, sqrt(2 / fan_out))), run as `lowering` says, and BatchNorm."""
  conv = functools.partial(
      lowering.conv, use_bias=False, kernel_init=layers.kaiming_normal_fan_out,
      dtype=dtype, param_dtype=param_dtype)
  depthwise = functools.partial(
      lowering.depthwise_conv, kernel_init=tf_depthwise_kernel_init,
      dtype=dtype, param_dtype=param_dtype)
  norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                           momentum=bn_momentum, epsilon=bn_epsilon,
                           dtype=dtype, param_dtype=param_dtype)
  return conv, depthwise, norm


def for_platform(platform: str, **choices: str) -> Lowering:
  """The Lowering of `choices` (kind -> choice or 'auto'; a missing kind is
  'auto') on `platform` ('cpu', 'gpu', 'tpu'): 'auto' is FASTEST[platform],
  else XLA's own."""
  unknown = sorted(set(choices) - set(CHOICES))
  if unknown:
    raise ValueError(f'Unknown lowering kind(s) {unknown}; the kinds are '
                     f'{", ".join(CHOICES)}.')
  fastest = FASTEST.get(platform, {})
  return Lowering(**{
      kind: (fastest.get(kind, CHOICES[kind][0])
             if choices.get(kind, AUTO) == AUTO else choices[kind])
      for kind in CHOICES})


def split_model_kwargs(kwargs: Mapping[str, Any]
                       ) -> tuple[dict[str, Any], dict[str, str]]:
  """(`kwargs` without LEGACY_MODEL_FIELDS, those as lowering choices)."""
  fields = {k: v for k, v in kwargs.items() if k not in LEGACY_MODEL_FIELDS}
  legacy = {k: v for k, v in kwargs.items() if k in LEGACY_MODEL_FIELDS}
  return fields, legacy


def of_config(config: Any, legacy: Mapping[str, str] | None = None,
              platform: str | None = None) -> Lowering:
  """A run's Lowering on `platform` (default: JAX's): its config's
  `lowering` choices, where those left 'auto' take the `legacy` ones its
  checkpoints recorded as model fields (split_model_kwargs)."""
  requested = config.get('lowering') or {}
  if hasattr(requested, 'to_dict'):
    requested = requested.to_dict()
  choices = {**(legacy or {}),
             **{k: v for k, v in requested.items() if v != AUTO}}
  return for_platform(platform or jax.default_backend(), **choices)
