"""CIFAR-100 from its Python pickles, and the ViT input pipeline that scales and resizes uint8 images."""

import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.data.cifar100 import load_cifar100
from jaxdfl.errors import ConfigError
from jaxdfl.models import vit


def write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": rng.integers(0, 100, n).tolist(),
             b"coarse_labels": rng.integers(0, 20, n).tolist()}
    path.write_bytes(pickle.dumps(batch))
    return batch


def test_reads_the_published_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = write_batch(folder / "train", 6, 0)
    write_batch(folder / "test", 4, 1)
    split = load_cifar100(tmp_path)  # the folder holding cifar-100-python works, and the folder itself too
    assert split.x_train.shape == (6, 3, 32, 32) and split.x_test.shape == (4, 3, 32, 32)
    assert split.x_train.dtype == np.uint8
    # row-major planes: the first 1024 bytes are the red channel of image 0
    np.testing.assert_array_equal(split.x_train[0, 0].ravel(), train[b"data"][0, :1024])
    np.testing.assert_array_equal(split.y_train, train[b"fine_labels"])
    assert load_cifar100(folder).x_test.shape == (4, 3, 32, 32)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train"):
        load_cifar100(tmp_path)


def test_prepare_pixels_scales_and_resizes():
    spec = vit.ViTSpec(image_size=16, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=16, num_labels=5, layer_norm_eps=1e-12, qkv_bias=True)
    images = jnp.asarray(np.array([0, 255], np.uint8).repeat(3 * 32 * 16).reshape(2, 3, 32, 16).repeat(2, -1))
    x = vit.prepare_pixels(images, spec)
    assert x.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(np.asarray(x[0]), -1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(x[1]), 1.0, atol=1e-6)
    floats = jnp.ones((1, 3, 16, 16))
    assert vit.prepare_pixels(floats, spec) is floats
