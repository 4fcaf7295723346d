"""Where a classifier looks: Grad-CAM and CAM heatmaps, behind cam.py.

Grad-CAM (Selvaraju et al. 2017): the ReLU of the feature maps of a layer
weighted by the spatial mean of the class score's gradient with respect to
them; any model, at any layer with a spatial output (default: the last one
with more than one position). CAM (Zhou et al. 2016): the class's dense
weights applied to the feature map at every position, for heads that are
global average pooling (after an optional ReLU or swish) + one dense layer, or
global average pooling of per-class maps (SqueezeNet); checked numerically on
every batch. For such heads Grad-CAM at the pooled map is the ReLU of CAM
divided by the number of positions.
"""

import dataclasses
import functools
import json
import os
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from matplotlib import figure as figure_lib
import numpy as np

METHODS = ('gradcam', 'cam')
# The elementwise functions a CAM head may apply before pooling.
_POOLED_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'identity': lambda x: x,
    'relu': lambda x: np.maximum(x, 0),
    'swish': lambda x: x / (1 + np.exp(-x)),
}


@dataclasses.dataclass(frozen=True)
class Result:
  """The heatmap of one image, with its top classes."""
  input: str
  image: str  # The PNG written.
  method: str
  layer: str
  explained: int  # The class the map is of.
  classes: list[int]  # Top-k, most probable first.
  probabilities: list[float]
  peak: list[int]  # (row, column) of the map's maximum, in image pixels.
  names: list[str] | None = None


def _path(module: nn.Module) -> str:
  return '/'.join(module.path)


def feature_maps(model: nn.Module, variables: Any,
                 image_shape: Sequence[int]) -> list[tuple[str, tuple]]:
  """(path, output shape) of every module call with an `[N, H, W, C]`
  output, in the order the calls finish (abstract: nothing runs)."""
  found = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if (context.method_name == '__call__' and context.module.path and
        getattr(out, 'ndim', 0) == 4):
      found.append((_path(context.module), tuple(out.shape)))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(functools.partial(model.apply, train=False), variables,
                   jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  return found


def last_feature_map(model: nn.Module, variables: Any,
                     image_shape: Sequence[int]) -> str:
  """The path of the last layer whose output has more than one position."""
  return _last_spatial(feature_maps(model, variables, image_shape), model,
                       image_shape)


def _last_spatial(known: list[tuple[str, tuple]], model: nn.Module,
                  image_shape: Sequence[int]) -> str:
  spatial = [path for path, shape in known if shape[1] * shape[2] > 1]
  if not spatial:
    raise ValueError(f'{type(model).__name__} has no layer with a spatial '
                     f'output at {image_shape[0]}x{image_shape[1]}.')
  return spatial[-1]


@functools.partial(jax.jit, static_argnames=('model', 'layer'))
def _forward(model: nn.Module, variables: Any, images: jax.Array, layer: str,
             classes: jax.Array) -> dict[str, jax.Array]:
  """The logits, the output of `layer`, the gradient there of the score of
  `classes` (-1: the top class), and the input and weights of the last layer
  when it is dense."""
  captured = {}

  def perturb(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name != '__call__' or not context.module.path:
      return out
    if _path(context.module) == layer:
      captured['features'] = out
      out = out + captured['delta']
    if isinstance(context.module, nn.Dense):
      captured['head'] = (args[0], context.module.variables['params'])
    else:
      captured.pop('head', None)  # The head must be the last layer.
    return out

  def logits_of(delta):
    captured.clear()
    captured['delta'] = delta
    with nn.intercept_methods(perturb):
      logits = model.apply(variables, images, train=False)
    return logits.astype(jnp.float32), dict(captured)

  features = jax.eval_shape(logits_of, jnp.zeros((), images.dtype)
                            )[1]['features']
  logits, vjp, aux = jax.vjp(
      logits_of, jnp.zeros(features.shape, features.dtype), has_aux=True)
  chosen = jnp.where(classes < 0, jnp.argmax(logits, -1), classes)
  gradient, = vjp(jax.nn.one_hot(chosen, logits.shape[-1], dtype=jnp.float32))
  out = {'logits': logits, 'features': aux['features'], 'gradient': gradient,
         'classes': chosen}
  if 'head' in aux:
    out['head_input'], params = aux['head']
    out['head_kernel'] = params['kernel']
    out['head_bias'] = params.get('bias', jnp.zeros(logits.shape[-1]))
  return out


def gradcam(forward: dict[str, np.ndarray]) -> np.ndarray:
  """Grad-CAM maps `[N, h, w]` of a `_forward` result."""
  features = np.asarray(forward['features'], np.float32)
  weights = np.asarray(forward['gradient'], np.float32).mean(axis=(1, 2))
  return np.maximum(np.einsum('nhwc,nc->nhw', features, weights), 0)


def cam(forward: dict[str, np.ndarray], layer: str) -> np.ndarray:
  """CAM maps `[N, h, w]` of a `_forward` result (without the head's bias).

  Raises ValueError unless the logits are the global average pool of
  `layer` (after an identity, ReLU or swish) through the last, dense layer,
  or the global average pool of per-class maps.
  """
  features = np.asarray(forward['features'], np.float32)
  logits = np.asarray(forward['logits'])
  classes = np.asarray(forward['classes'])
  for activation in _POOLED_ACTIVATIONS.values():
    maps = activation(features)
    pooled = maps.mean(axis=(1, 2))
    if 'head_input' in forward:
      head_input = np.asarray(forward['head_input'], np.float32)
      if pooled.shape == head_input.shape and np.allclose(
          pooled, head_input, rtol=1e-4, atol=1e-4 * np.abs(pooled).max()):
        kernel = np.asarray(forward['head_kernel'], np.float32)
        return np.einsum('nhwc,cn->nhw', maps, kernel[:, classes])
    elif pooled.shape == logits.shape and np.allclose(
        pooled, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max()):
      return maps[np.arange(len(maps)), :, :, classes]
  raise ValueError(
      f'CAM needs a head that is global average pooling of {layer} (after '
      'an optional ReLU or swish) into one dense layer, or the pool of '
      'per-class maps; this model has another. Use --method=gradcam.')


def upsample(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Maps `[N, h, w]` bilinearly resized to `size` (H, W), each scaled to
  [0, 1]: divided by its maximum, after subtracting its minimum when that is
  negative (CAM)."""
  resized = np.asarray(jax.image.resize(
      jnp.asarray(maps, jnp.float32), (len(maps), *size), 'linear'))
  low = resized.min(axis=(1, 2), keepdims=True)
  low = np.where(low < 0, low, 0.0)  # Grad-CAM maps are >= 0 already.
  span = resized.max(axis=(1, 2), keepdims=True) - low
  return np.where(span > 0, (resized - low) / np.where(span > 0, span, 1), 0)


def class_maps(model: nn.Module, variables: Any, images: np.ndarray,
               method: str = 'gradcam', layer: str | None = None,
               class_index: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  """(maps `[N, h, w]`, probabilities `[N, classes]`, explained classes
  `[N]`, layer) of `images` `[N, H, W, C]`: the class `class_index`, or each
  image's top class; at `layer` (default `last_feature_map`)."""
  if method not in METHODS:
    raise ValueError(f'Unknown method {method!r}; use one of '
                     f'{", ".join(METHODS)}.')
  images = np.asarray(images, np.float32)
  known = feature_maps(model, variables, images.shape[1:])
  layer = layer or _last_spatial(known, model, images.shape[1:])
  if layer not in dict(known):
    raise ValueError(f'No layer {layer!r} with an [N, H, W, C] output; the '
                     f'last ones: {", ".join(p for p, _ in known[-8:])}.')
  num_classes = jax.eval_shape(functools.partial(model.apply, train=False),
                               variables, images[:1]).shape[-1]
  if class_index is not None and not 0 <= class_index < num_classes:
    raise ValueError(f'--class={class_index} is not one of the model\'s '
                     f'{num_classes} classes (0 to {num_classes - 1}).')
  classes = np.full(len(images), -1 if class_index is None else class_index,
                    np.int32)
  forward = jax.device_get(_forward(model, variables, images, layer, classes))
  maps = gradcam(forward) if method == 'gradcam' else cam(forward, layer)
  return (maps, np.asarray(jax.nn.softmax(forward['logits'])),
          forward['classes'], layer)


def display_image(image: np.ndarray, preprocessing: Any) -> np.ndarray:
  """An `[H, W, C]` model input as `[H, W, 3]` values in [0, 1]: the
  preprocessing undone, else min-max scaled."""
  if preprocessing is not None:
    pixels = (image * np.asarray(preprocessing.std) +
              np.asarray(preprocessing.mean)) / 255
  else:
    span = image.max() - image.min()
    pixels = (image - image.min()) / (span if span > 0 else 1)
  pixels = np.clip(pixels, 0, 1)
  return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def _label(index: int, names: Sequence[str] | None) -> str:
  return f'{index}:{names[index]}' if names else str(index)


def overlay(image: np.ndarray, heatmap: np.ndarray, title: str,
            top: Sequence[tuple[str, float]]) -> figure_lib.Figure:
  """The image, and the image under the heatmap with the top classes."""
  fig = figure_lib.Figure(figsize=(7, 3.8), layout='constrained')
  left, right = fig.subplots(1, 2)
  left.imshow(image, interpolation='nearest')
  left.set_title('input')
  right.imshow(image, interpolation='nearest')
  right.imshow(heatmap, cmap='jet', alpha=0.5, vmin=0, vmax=1,
               interpolation='bilinear')
  right.set_title(title)
  for ax in (left, right):
    ax.set_axis_off()
  fig.supxlabel(f'top-{len(top)}:   ' + '   '.join(
      f'{label} {p:.3f}' for label, p in top), fontsize='small')
  return fig


def output_names(inputs: Sequence[str], method: str) -> list[str]:
  """A distinct PNG file name per input ('a.png' -> 'a_gradcam.png',
  'b.npy[3]' -> 'b_3_gradcam.png')."""
  names, used = [], set()
  for name in inputs:
    base, _, index = re.fullmatch(r'(.*?)(\[(\d+)\])?',
                                  os.path.basename(name)).groups()
    stem = os.path.splitext(base)[0] + (f'_{index}' if index else '')
    candidate, copy = f'{stem}_{method}.png', 1
    while candidate in used:
      copy += 1
      candidate = f'{stem}-{copy}_{method}.png'
    used.add(candidate)
    names.append(candidate)
  return names


RESULTS_FILE = 'cam.jsonl'


def run(checkpoint_path: str, inputs: Sequence[str], output_dir: str, *,
        method: str = 'gradcam', layer: str | None = None,
        class_index: int | None = None, top: int = 3, use_ema: bool = False,
        batch_size: int = 32, overwrite: bool = False) -> list[Result]:
  """Writes a heatmap overlay PNG per image of `inputs` (image files or .npy
  batches, as predict.py takes them) to `output_dir`, and cam.jsonl there
  (one `Result` per image); prints where each map peaks.

  Raises ValueError or OSError (one line) on a bad input, checkpoint, layer,
  class or head, or existing outputs without `overwrite`; inputs are all
  checked before any is run.
  """
  from jaxcnn import predict  # pylint: disable=import-outside-toplevel
  predictor = predict.load(checkpoint_path, use_ema)
  names, arrays = predict.load_inputs(predictor, inputs)
  files = output_names(names, method)
  existing = [f for f in [*files, RESULTS_FILE]
              if os.path.exists(os.path.join(output_dir, f))]
  if existing and not overwrite:
    raise FileExistsError(f'{os.path.join(output_dir, existing[0])} exists; '
                          'pass --overwrite to replace it.')
  images = [image for array in arrays for image in array]
  results = []
  for start in range(0, len(images), batch_size):
    batch = np.stack(images[start:start + batch_size])
    maps, probabilities, explained, used = class_maps(
        predictor.model, predictor.variables, batch, method, layer,
        class_index)
    os.makedirs(output_dir, exist_ok=True)  # Once the maps can be made.
    heatmaps = upsample(maps, batch.shape[1:3])
    tops = predict.top_k(names[start:start + len(batch)], probabilities, top,
                         predictor.class_names)
    for i, (image, heatmap, best) in enumerate(zip(batch, heatmaps, tops)):
      index = start + i
      c = int(explained[i])
      label = _label(c, predictor.class_names)
      title = f'{method} of {label} ({probabilities[i, c]:.3f}) at {used}'
      fig = overlay(display_image(image, predictor.preprocessing), heatmap,
                    title, [(_label(k, predictor.class_names), p) for k, p in
                            zip(best.classes, best.probabilities)])
      path = os.path.join(output_dir, files[index])
      fig.savefig(path, dpi=100)
      peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
      results.append(Result(names[index], path, method, used, c,
                            best.classes, best.probabilities,
                            [int(p) for p in peak], best.names))
      print(f'{names[index]}: {method} of class {label} peaks at (row, col) '
            f'{tuple(results[-1].peak)} -> {path}')
  with open(os.path.join(output_dir, RESULTS_FILE), 'w') as f:
    for result in results:
      record = {k: v for k, v in dataclasses.asdict(result).items()
                if v is not None}
      f.write(json.dumps(record) + '\n')
  return results
