"""Where a transformer step's time goes, against the plain GEMM rate (JAX).

For one `MuseTransformerBlock` at a config's shapes (default: the issue's
d512 / 8 heads / MLP 2048 / 256 tokens / text 77 / batch 8), times each part
forward and forward+backward, and the matrix products that part is made of
in their three layouts (plain `x @ w`, the input gradient `dy @ wᵀ`, the
weight gradient `xᵀ @ dy`), and prints GFLOP/s for each. Parts: the block,
its MLP, its self-attention layer, the attention core (scores, softmax,
weights @ values) and the output head with the masked-token loss.

    KERAS_BACKEND=jax python benchmarks/step_breakdown.py --out step_breakdown.json

FLOPs count matrix products only (`flops.py`'s convention); forward+backward
is 3x the forward count.
"""

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from bench_utils import format_table, machine_info  # noqa: E402

CONFIGS = {
    "small_d512_l8": dict(batch=8, tokens=256, width=512, heads=8, mlp=2048, text_len=77, codebook=8192),
    "shapes_d128_l4": dict(batch=32, tokens=256, width=128, heads=4, mlp=512, text_len=32, codebook=512),
    "tiny": dict(batch=2, tokens=16, width=32, heads=4, mlp=64, text_len=8, codebook=64),  # CI smoke run
}


def _timer(repeats):
    import jax
    import numpy as np

    def run(fn, *args):
        jax.block_until_ready(fn(*args))  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    return run


def _stateless(layer, call):
    import keras

    variables = layer.trainable_variables

    def fn(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return call(*args)

    return [v.value for v in variables], fn


def breakdown(config, repeats=5):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from keras_muse.layers.transformer_block import MuseTransformerBlock
    from keras_muse.layers.transformer_block import attention

    b, n, d, h = config["batch"], config["tokens"], config["width"], config["heads"]
    mlp, text_len, vocab = config["mlp"], config["text_len"], config["codebook"]
    t = b * n
    rng = np.random.default_rng(0)
    run = _timer(repeats)
    rows = []

    def row(part, gflop, fwd=None, fwd_bwd=None, note=""):
        r = {"part": part, "gflop_fwd": float(f"{gflop:.4g}")}
        if fwd is not None:
            r["fwd_ms"] = round(fwd * 1e3, 1)
            r["fwd_gflops"] = round(gflop / fwd, 1)
        if fwd_bwd is not None:
            r["fwd_bwd_ms"] = round(fwd_bwd * 1e3, 1)
            r["fwd_bwd_gflops"] = round(3 * gflop / fwd_bwd, 1)
        if note:
            r["note"] = note
        rows.append(r)

    def both(fn, params, *inputs):
        loss = lambda p, *x: jnp.sum(fn(p, *x) ** 2)  # noqa: E731
        grad = jax.jit(jax.grad(loss, argnums=tuple(range(1 + len(inputs)))))
        return run(jax.jit(fn), params, *inputs), run(grad, params, *inputs)

    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    x, ctx, ctx_mask = normal(b, n, d), normal(b, text_len, d), jnp.ones((b, text_len), bool)

    # GEMMs at the MLP's shapes, in the layouts a train step runs them.
    a_in, w, dy = normal(t, d), normal(d, mlp), normal(t, mlp)
    g = 2 * t * d * mlp / 1e9
    row("gemm x@w (forward)", g, run(jax.jit(lambda a, w: a @ w), a_in, w))
    row("gemm dy@wT (input grad)", g, run(jax.jit(lambda dy, w: dy @ w.T), dy, w))
    row("gemm xT@dy (weight grad)", g, run(jax.jit(lambda a, dy: a.T @ dy), a_in, dy))

    block = MuseTransformerBlock(d, h, mlp)
    block.build((None, None, d), (None, None, d))
    params, fn = _stateless(block, lambda x: block(x, context=ctx, context_mask=ctx_mask, training=True))
    per_token = 4 * d * d + 2 * n * d + 2 * d * d + 2 * text_len * d + 2 * d * mlp
    kv = 2 * b * text_len * d * d
    row("block", (2 * t * per_token + 2 * kv) / 1e9, *both(fn, params, x))

    params, fn = _stateless(block, lambda x: block.mlp_out(jax.nn.gelu(block.mlp_in(x), approximate=True)))
    row("mlp (keras Dense on [B*N, D])", 4 * t * d * mlp / 1e9, *both(fn, params, x.reshape(t, d)))

    attn = block.self_attention
    params, fn = _stateless(attn, lambda x: attn(x, training=True))
    row("self-attention layer", (8 * t * d * d + 4 * t * n * d) / 1e9, *both(fn, params, x))

    q = normal(b, n, h, d // h)
    core = lambda p, q: attention(q, q, q, training=True)  # noqa: E731
    row("attention core (training)", 4 * t * n * d / 1e9, *both(core, (), q),
        note="scores [B*heads, N, N] are memory-bound")
    infer = jax.jit(lambda q: attention(q, q, q, training=False))
    row("attention core (sampling)", 4 * t * n * d / 1e9, run(infer, q))

    emb = normal(vocab, d)
    labels = jnp.asarray(rng.integers(0, vocab, (t,)), jnp.int32)
    mask = jnp.asarray(rng.random(t) < 0.64)

    def head(e, hidden):
        logits = hidden @ e.T
        logp = jax.nn.log_softmax(logits, axis=-1)
        smooth = 0.9 * jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0] + 0.1 * jnp.mean(logp, -1)
        return -jnp.sum(jnp.where(mask, smooth, 0.0)) / jnp.sum(mask)

    g = 2 * t * d * vocab / 1e9
    fwd = run(jax.jit(head), emb, x.reshape(t, d))
    fwd_bwd = run(jax.jit(jax.grad(head, argnums=(0, 1))), emb, x.reshape(t, d))
    row("output head + smoothed loss", g, fwd, fwd_bwd)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small_d512_l8", choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    import jax

    rows = breakdown(CONFIGS[args.config], args.repeats)
    columns = ["part", "gflop_fwd", "fwd_ms", "fwd_gflops", "fwd_bwd_ms", "fwd_bwd_gflops", "note"]
    print(f"{args.config} on {jax.devices()[0].device_kind} ({os.cpu_count()} CPUs)")
    print(format_table(rows, columns))
    if args.out:
        result = {"config": args.config, **CONFIGS[args.config], "device": jax.devices()[0].device_kind,
                  "machine": machine_info(), "rows": rows}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
