"""Pretrain the bundled tiny ViT backbone on scikit-learn's digits (the pretraining split only).

    python experiments/pretrain_tiny_vit.py            # writes jaxdfl/models/weights/tiny_vit_digits.safetensors
    python experiments/pretrain_tiny_vit.py --wide     # the 128-wide backbone (checkpoint: bundled_wide)

Recipe: upright digits with their true labels, random ±1-pixel shifts, AdamW (lr 2e-3 cosine, wd 0.05),
batch 128. The fine-tuning tasks use disjoint images (see jaxdfl/data/digits.py). The default (width 64) takes
about 5 minutes on 2 CPU cores (3000 steps) and reached 0.972 validation accuracy. ``--wide`` (width 128, MLP
256, 401,930 parameters) is the backbone of Paper A's fair test (experiments/paper_a_fair.py): wide enough that
ten devices' rank-4 projections take under a third of every layer's input space.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from jaxdfl.data import pretrain_split
from jaxdfl.models import bundled_weights_path, save_weights, tiny_vit
from jaxdfl.models.tiny_vit import TinyViTSpec


def random_shift(key, images):
    """Shift each 8×8 image by up to one pixel in each direction, filling with zeros."""
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1)))
    offsets = jax.random.randint(key, (images.shape[0], 2), 0, 3)
    return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1]), (8, 8)))(padded, offsets)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wide", action="store_true", help="width 128, MLP 256 (checkpoint: bundled_wide)")
    parser.add_argument("--out", default=None, help="default: the bundled file of the chosen width")
    args = parser.parse_args()

    spec = TinyViTSpec(dim=128, mlp_dim=256) if args.wide else TinyViTSpec()
    args.out = args.out or str(bundled_weights_path("bundled_wide" if args.wide else "bundled"))
    x_train, y_train, x_val, y_val = pretrain_split()
    params = tiny_vit.init_params(jax.random.key(args.seed), spec)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, 100, args.steps)
    optimizer = optax.adamw(schedule, weight_decay=0.05)
    opt_state = optimizer.init(params)

    def loss_fn(p, x, y):
        logits = tiny_vit.apply(p, x, spec)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, s, key):
        k_idx, k_aug = jax.random.split(key)
        idx = jax.random.randint(k_idx, (args.batch,), 0, len(y_train))
        x, y = random_shift(k_aug, jnp.asarray(x_train)[idx]), jnp.asarray(y_train)[idx]
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    accuracy = jax.jit(lambda p, x, y: (tiny_vit.apply(p, x, spec).argmax(-1) == y).mean())
    start = time.time()
    key = jax.random.key(args.seed + 1)
    for i in range(args.steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
        if (i + 1) % 500 == 0:
            print(f"step {i + 1}: loss {float(loss):.4f}  val acc {float(accuracy(params, x_val, y_val)):.4f}")
    val_acc = float(accuracy(params, x_val, y_val))
    recipe = {"data": "sklearn digits, pretraining split (upright, true labels)", "train_examples": len(y_train),
              "val_examples": len(y_val), "val_accuracy": round(val_acc, 4), "steps": args.steps,
              "batch": args.batch, "optimizer": f"adamw lr={args.lr} cosine, wd=0.05", "augment": "±1 px shifts",
              "seed": args.seed, "script": "experiments/pretrain_tiny_vit.py"}
    save_weights(args.out, params, spec, recipe)
    n = sum(x.size for x in jax.tree.leaves(params))
    print(f"wrote {args.out}: {n} parameters, val accuracy {val_acc:.4f}, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
