"""Layout maps: every large weight has a rule, rules fit the shapes, clear errors.

No devices needed: a `DeviceMesh` over device names is enough to build and
query layout maps (JAX meets the mesh only when a variable is placed), so
these run in the main test process. The runs on 8 devices are in
test_distributed_training.py.
"""

import keras
import numpy as np
import pytest

from helpers import make_tiny_muse_backbone
from helpers import make_tiny_text_encoder
from helpers import make_vqgan
from keras_muse import distribution as muse_distribution
from keras_muse.models import MuseBackbone
from keras_muse.models import MuseSuperResBackbone
from keras_muse.models import MuseSuperResolution
from keras_muse.models import MuseTextEncoder
from keras_muse.models import MuseTextToImage
from keras_muse.models import VQGAN

FAKE_DEVICES = [f"cpu:{i}" for i in range(8)]
# A weight this big (elements) must match a rule, even one that replicates it.
LARGE = 256
# Weights deliberately left to the "replicate what matches nothing" default:
# 2-D position tables ([grid, d]) and T5's relative-position bias ([32, heads]).
SMALL_TABLES = ("position_embedding/rows", "position_embedding/cols", "self_attention/embeddings")


def _mesh(shape=(2, 4)):
    return keras.distribution.DeviceMesh(shape, ("batch", "model"), devices=FAKE_DEVICES[: int(np.prod(shape))])


@pytest.fixture(scope="module")
def models(preprocessor):
    sr_config = dict(MuseSuperResBackbone.config_presets["muse_super_res_tiny"]["config"])
    keras.utils.set_random_seed(0)
    return {
        MuseBackbone: make_tiny_muse_backbone(),
        MuseSuperResBackbone: MuseSuperResBackbone(**sr_config),
        MuseTextEncoder: make_tiny_text_encoder(preprocessor),
        VQGAN: make_vqgan(factor=4),
    }


@pytest.mark.parametrize("cls", [MuseBackbone, MuseSuperResBackbone, MuseTextEncoder, VQGAN])
def test_every_large_weight_matches_exactly_one_rule(models, cls):
    model = models[cls]
    for layout_map in (cls.get_layout_map(_mesh()), muse_distribution.task_layout_map(_mesh())):
        # `LayoutMap[path]` raises if a path matches two rules.
        matched = muse_distribution.check_layout_map(layout_map, model)
        unmatched = [v for v in model.weights if v.path not in matched]
        for v in unmatched:
            assert int(np.prod(v.shape)) <= LARGE, f"{v.path} {v.shape} would be silently replicated"
            assert len(v.shape) == 1 or v.path.endswith(SMALL_TABLES), (v.path, v.shape)
        assert len(matched) >= 4
        # Keras relayouts a layer's output when "<layer path>/output" matches
        # a rule; variable rules must not catch activations.
        for layer in model._flatten_layers():
            if layer.path:
                assert layout_map[layer.path + "/output"] is None, layer.path


def test_transformer_kernels_are_megatron_split(models):
    layout_map = MuseBackbone.get_layout_map(_mesh())
    expected = {
        "transformer_layer_0/self_attention/query/kernel": ("batch", "model"),
        "transformer_layer_1/cross_attention/key/kernel": ("batch", "model"),
        "transformer_layer_1/cross_attention/output/kernel": ("model", "batch"),
        "transformer_layer_0/mlp_in/kernel": ("batch", "model"),
        "transformer_layer_0/mlp_out/kernel": ("model", "batch"),
        "token_embedding/embeddings": (None, "model"),
    }
    for path, axes in expected.items():
        assert layout_map[path].axes == axes, path
    for path in ("transformer_layer_0/mlp_norm/gamma", "transformer_layer_0/mlp_in/bias", "final_norm/beta"):
        assert layout_map[path] is None
    sr = MuseSuperResBackbone.get_layout_map(_mesh())
    assert sr["low_res_embedding/embeddings"].axes == ("model", "batch")  # the vocabulary axis
    assert sr["low_res_layer_0/self_attention/value/kernel"].axes == ("batch", "model")
    t5 = MuseTextEncoder.get_layout_map(_mesh())
    assert t5["transformer_encoder_layer_3/self_attention/output_projector/kernel"].axes == ("model", "batch")
    assert t5["transformer_encoder_layer_3/output_projector/kernel"].axes == ("model", "batch")
    assert t5["transformer_encoder_layer_3/gate_projector/kernel"].axes == ("batch", "model")
    assert VQGAN.get_layout_map(_mesh())["decoder/level1_upsample/kernel"].axes == ()
    # A model built under a parent's name scope is still matched.
    assert layout_map["outer/transformer_layer_0/mlp_in/kernel"].axes == ("batch", "model")


def test_custom_axis_names():
    mesh = keras.distribution.DeviceMesh((2, 4), ("data", "tensor"), devices=FAKE_DEVICES)
    layout_map = MuseBackbone.get_layout_map(mesh, model_parallel_dim_name="tensor", data_parallel_dim_name="data")
    assert layout_map["transformer_layer_5/mlp_out/kernel"].axes == ("tensor", "data")
    with pytest.raises(ValueError, match="model_parallel_dim_name"):
        MuseBackbone.get_layout_map(mesh)
    with pytest.raises(ValueError, match="device_mesh"):
        MuseBackbone.get_layout_map((2, 4))


def test_indivisible_width_raises_a_clear_error():
    # hidden 30 = 2 heads x 15: fine for the model, not for a 4-way model axis.
    backbone = make_tiny_muse_backbone(hidden_dim=30, num_heads=2, mlp_dim=60)
    with pytest.raises(ValueError, match=r"token_embedding/embeddings.*\(65, 30\).*dimension 1 \(30\).*model axis size 4"):
        muse_distribution.model_parallel(backbone, mesh_shape=(2, 4), devices=FAKE_DEVICES)
    # A 2-way model axis (and no data split) divides every width: accepted.
    dist = muse_distribution.model_parallel(backbone, mesh_shape=(1, 2), devices=FAKE_DEVICES[:2])
    assert isinstance(dist, keras.distribution.ModelParallel)
    assert dist.batch_dim_name == "batch"


def test_check_variable_layout_rank_and_divisibility():
    mesh = _mesh()
    muse_distribution.check_variable_layout("a", (8, 4), ("batch", "model"), mesh)
    muse_distribution.check_variable_layout("a", (3, 3, 8, 8), (), mesh)
    with pytest.raises(ValueError, match="'b'.*3 axes.*2 dimensions"):
        muse_distribution.check_variable_layout("b", (8, 4), ("batch", "model", None), mesh)
    with pytest.raises(ValueError, match="dimension 0 \\(6\\).*batchxmodel axis size 8"):
        muse_distribution.check_variable_layout("c", (6, 4), (("batch", "model"), None), mesh)


def test_model_parallel_arguments():
    dist = muse_distribution.model_parallel(MuseTextToImage, mesh_shape=(2, 4), devices=FAKE_DEVICES)
    assert dist.device_mesh.shape == (2, 4) and tuple(dist.device_mesh.axis_names) == ("batch", "model")
    layout_map = dist._layout_map
    # The task map covers all its parts.
    assert layout_map["transformer_layer_0/mlp_in/kernel"].axes == ("batch", "model")
    assert layout_map["transformer_encoder_layer_0/input_projector/kernel"].axes == ("batch", "model")
    assert layout_map["encoder/conv_in/kernel"].axes == ()
    sr = muse_distribution.model_parallel(MuseSuperResolution, mesh_shape=(1, 8), devices=FAKE_DEVICES)
    assert sr._layout_map["low_res_embedding/embeddings"].axes == ("model", "batch")
    with pytest.raises(ValueError, match="mesh_shape.*needs 8 devices.*has 4"):
        muse_distribution.model_parallel(MuseBackbone, mesh_shape=(2, 4), devices=FAKE_DEVICES[:4])
    with pytest.raises(ValueError, match="mesh_shape"):
        muse_distribution.model_parallel(MuseBackbone, mesh_shape=(8,), devices=FAKE_DEVICES)
    with pytest.raises(ValueError, match="model_class_or_backbone.*Dense"):
        muse_distribution.model_parallel(keras.layers.Dense, devices=FAKE_DEVICES)
    dp = muse_distribution.data_parallel(devices=FAKE_DEVICES)
    assert isinstance(dp, keras.distribution.DataParallel) and dp.device_mesh.shape == (8,)
    with pytest.raises(ValueError, match="devices"):
        muse_distribution.data_parallel(devices=[])
