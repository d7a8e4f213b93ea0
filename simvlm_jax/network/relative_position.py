"""2D relative position bias among the image patches of the encoder's self-attention.

SimVLM adds a 2D relative position term for image patches inside the Transformer layers; the paper gives no
details, so this follows the common form (Swin, BEiT), which we assume:

- Buckets: one per 2D offset (dy, dx) between two patches of one image, dy in [-(H-1), H-1] and dx in
  [-(W-1), W-1], for the (H, W) grid of `config.image_size`: (2H-1)(2W-1) buckets (729 for Base's 14x14).
  An image of another size reuses the table, clipping larger offsets to the edge buckets.
- Each layer of the encoder has its own table [(2H-1)(2W-1), heads]: one learned scalar per bucket and head,
  added to the attention logits of query patch i and key patch j. Initialised to zero, so a new model
  starts exactly as one without the term.
- Only image-image pairs within one image get a bias; text tokens, pairs across two images of a multi-image
  example, and the decoder's attentions get none (the learned 1D absolute positions stay in every case).

`config.image_relative_position=False` removes the tables (the ablation; the parameter tree then has no
`image_relative_position` entries).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from simvlm_jax.network.layers import param_with_axes

Array = jax.Array


def num_buckets(table_grid: tuple[int, int]) -> int:
    height, width = table_grid
    return (2 * height - 1) * (2 * width - 1)


def bucket_index(grid: tuple[int, int], num_images: int, text_length: int, table_grid: tuple[int, int]) -> Array:
    """int32 [L, L], L = num_images * h * w + text_length: the bucket of each (query, key) pair of the encoder
    sequence [image 0 patches (row-major) ; ... ; text], or `num_buckets(table_grid)` (the no-bias bucket)
    for every pair that is not two patches of one image. Built with jnp ops, so that tracing (e.g. the
    preflight's shape-only pass) allocates nothing."""
    h, w = grid
    table_h, table_w = table_grid
    image_length = num_images * h * w
    position = jnp.arange(image_length + text_length)
    in_image = position < image_length
    image_id = jnp.where(in_image, position // (h * w), -1)
    rows, cols = jnp.divmod(position % (h * w), w)
    dy = jnp.clip(rows[:, None] - rows[None, :], -(table_h - 1), table_h - 1) + table_h - 1
    dx = jnp.clip(cols[:, None] - cols[None, :], -(table_w - 1), table_w - 1) + table_w - 1
    same_image = in_image[:, None] & (image_id[:, None] == image_id[None, :])
    return jnp.where(same_image, dy * (2 * table_w - 1) + dx, num_buckets(table_grid)).astype(jnp.int32)


class ImageRelativePositionBias(nn.Module):
    """One layer's table: bucket index [L, L] -> bias [1, heads, L, L] float32 (zero outside image pairs)."""

    num_heads: int
    table_grid: tuple[int, int]

    @nn.compact
    def __call__(self, index: Array) -> Array:
        table = param_with_axes(
            "rel_embedding",
            nn.initializers.zeros,
            (num_buckets(self.table_grid), self.num_heads),
            jnp.float32,
            axes=("relpos_buckets", "heads"),
        )
        table = jnp.concatenate([table, jnp.zeros((1, self.num_heads), jnp.float32)])  # the no-bias bucket
        bias = jnp.take(table, index, axis=0)  # [L, L, heads]
        return jnp.transpose(bias, (2, 0, 1))[None]  # [1, heads, L, L]
