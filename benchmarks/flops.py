"""Forward-pass FLOP counts of the Muse transformers, for achieved FLOP/s and MFU.

A multiply-add is 2 FLOPs; only matrix products are counted (layer norms,
GELU, softmax and the sampler's sorting are a few per cent at these sizes
and are left out, as MFU figures usually do). Counts follow the code as it
runs: the logits come from the codebook's rows of the embedding matrix
(`codebook_size`, not the [MASK] row), self-attention is global unless the
backbone has an `attention_window`, and under classifier-free guidance the
output projection runs once per example (guidance combines the head
features, `MaskedTokenTransformerMixin.token_logits`).

    from flops import backbone_flops, sampling_flops, train_step_flops
    f = backbone_flops(backbone, text_len=77)   # {"step": ..., "context": ...}
    sampling_flops(backbone, 77, batch=4, steps=12, guidance=True)

`step` is what one call of `logits_step` costs per example (the token side,
`logits` of it the output projection);
`context` what `conditioning_key_values` costs per example: text projection,
the super-res model's low-res stack, the cross-attention keys/values. A
sampler pays `context` once per generation and `step` once per decoding
step, both on the doubled batch under classifier-free guidance. A training
step pays both once, forward and backward (backward = 2x forward).

`python benchmarks/flops.py` checks the count against XLA's cost analysis of
the compiled forward pass (JAX): 0.994 for the d512 base model, 0.97 for a
windowed super-res model (XLA also counts norms, GELU and softmax).
"""


def _cross(n, d, context_len):
    """Cross-attention of n tokens over context_len positions, per step."""
    return 2 * 2 * n * d * d + 2 * 2 * n * context_len * d  # q, out; scores, weights @ v


def _block(n, d, mlp, context_len, attn_len):
    """One `MuseTransformerBlock` on n tokens, width d (cross-attention keys
    and values excluded: they belong to the context)."""
    self_attn = 4 * 2 * n * d * d + 2 * 2 * n * attn_len * d  # q, k, v, out; scores, weights @ v
    cross = _cross(n, d, context_len) if context_len else 0
    return self_attn + cross + 2 * 2 * n * d * mlp


def backbone_flops(backbone, text_len):
    """Per-example forward FLOPs of a `MuseBackbone` / `MuseSuperResBackbone`:
    `{"step": token side, "context": once per conditioning, "logits": the
    output projection (part of "step")}`."""
    n, d, mlp = backbone.num_tokens, backbone.hidden_dim, backbone.mlp_dim
    window = getattr(backbone, "attention_window", None)
    attn_len = window * window if window else n
    low_n = getattr(backbone, "num_low_res_tokens", 0)
    context_len = text_len + low_n
    step = backbone.num_layers * _block(n, d, mlp, context_len, attn_len)
    step += 2 * n * d * d  # head dense
    logits = 2 * n * d * backbone.codebook_size
    context = 2 * text_len * backbone.text_dim * d  # text projection
    context += backbone.num_layers * 2 * 2 * context_len * d * d  # cross-attention keys, values
    if low_n:
        context += backbone.low_res_num_layers * _block(low_n, d, mlp, 0, low_n)
    return {"step": step + logits, "context": context, "logits": logits}


def sampling_flops(backbone, text_len, batch, steps, guidance, single_position_null=None):
    """FLOPs of one `generate` / `upsample` call of `batch` examples.

    `single_position_null` (default: guided and the backbone supports it,
    as for the empty prompt): the unconditional half attends to one text
    position, so it has no per-step cross-attention and a one-position
    context (`MuseBackbone.conditioning_key_values`).
    """
    f = backbone_flops(backbone, text_len)
    rows = batch * (2 if guidance else 1)
    # Guided: the transformer runs on both halves, the logits once.
    total = rows * (f["context"] + steps * f["step"]) - (rows - batch) * steps * f["logits"]
    if single_position_null is None:
        single_position_null = getattr(backbone, "single_position_guidance", False)
    if guidance and single_position_null:
        n, d, layers = backbone.num_tokens, backbone.hidden_dim, backbone.num_layers
        one_position = 2 * backbone.text_dim * d + layers * 2 * 2 * d * d  # projection; value, out
        total -= batch * (steps * layers * _cross(n, d, text_len) + f["context"] - one_position)
    return total


def train_step_flops(backbone, text_len, batch):
    """FLOPs of one training step (forward + backward = 3x forward)."""
    f = backbone_flops(backbone, text_len)
    return 3 * batch * (f["context"] + f["step"])


PEAK_KEYS = {"float32": "float32", "mixed_bfloat16": "bfloat16", "bfloat16": "bfloat16"}


def load_peak(path, dtype_policy):
    """Measured matmul TFLOP/s for `dtype_policy`'s compute dtype from a
    `matmul_peak.py` JSON, or None."""
    if not path:
        return None
    import json

    with open(path) as f:
        peaks = json.load(f)["peak_tflops"]
    return peaks.get(PEAK_KEYS.get(dtype_policy, dtype_policy))


def add_rates(row, flop, seconds, peak_tflops):
    """Adds `gflop`, `tflops` (achieved) and `mfu` (against `peak_tflops`)."""
    row["gflop"] = round(flop / 1e9, 2)
    row["tflops"] = round(flop / seconds / 1e12, 4)
    if peak_tflops:
        row["peak_tflops"] = round(peak_tflops, 2)
        row["mfu"] = round(flop / seconds / 1e12 / peak_tflops, 4)
    return row


def _check_against_xla():
    """Compares `backbone_flops` with XLA's cost analysis of the compiled
    forward pass (which also counts elementwise work): JAX backend only."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import numpy as np

    from keras_muse.models import MuseBackbone
    from keras_muse.models import MuseSuperResBackbone

    def xla_flops(backbone, inputs):
        def forward(trainable, non_trainable, inputs):
            return backbone.stateless_call(trainable, non_trainable, inputs, training=False)[0]

        args = ([v.value for v in backbone.trainable_variables],
                [v.value for v in backbone.non_trainable_variables], inputs)
        cost = jax.jit(forward).lower(*args).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    text_len = 77
    base = MuseBackbone(codebook_size=8192, grid_size=16, hidden_dim=512, num_layers=8, num_heads=8,
                        mlp_dim=2048, text_dim=512, dropout=0.0)
    base_inputs = {"token_ids": np.zeros((1, 256), "int32"),
                   "text_embeddings": np.zeros((1, text_len, 512), "float32"),
                   "text_padding_mask": np.ones((1, text_len), bool)}
    sr = MuseSuperResBackbone(codebook_size=512, grid_size=32, low_res_codebook_size=512, low_res_grid_size=16,
                              hidden_dim=128, num_layers=4, low_res_num_layers=2, num_heads=4, mlp_dim=512,
                              text_dim=64, dropout=0.0, attention_window=8)
    sr_inputs = {"token_ids": np.zeros((1, 1024), "int32"), "low_res_token_ids": np.zeros((1, 256), "int32"),
                 "text_embeddings": np.zeros((1, 32, 64), "float32"),
                 "text_padding_mask": np.ones((1, 32), bool)}
    for backbone, inputs in ((base, base_inputs), (sr, sr_inputs)):
        f = backbone_flops(backbone, inputs["text_embeddings"].shape[1])
        counted = f["step"] + f["context"]
        xla = xla_flops(backbone, inputs)
        print(f"{type(backbone).__name__}: counted {counted / 1e9:.3f} GFLOP, XLA {xla / 1e9:.3f} GFLOP "
              f"(ratio {counted / xla:.3f})")


if __name__ == "__main__":
    _check_against_xla()
