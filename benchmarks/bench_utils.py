"""Shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""


def format_table(rows, columns):
    """A plain-text table of `rows` (dicts) over `columns`."""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def machine_info(**extra):
    """What the figures were measured on: core count, platform, and the CPU
    (model name, family/model and its widest vector ISA), because the 2-core
    machines these benchmarks run on differ by ~2x in GEMM throughput
    between an AVX2 and an AVX-512 part, and a ratio quoted without the
    machine cannot be checked."""
    import os
    import platform

    info = {"cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        text = ""
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()) if v
    )
    if fields:
        flags = set(fields.get("flags", "").split())
        isa = [name for name in ("amx_bf16", "avx512f", "avx2") if name in flags]
        info["cpu"] = (
            f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} "
            f"model {fields.get('model', '?')}{', ' + '/'.join(isa) if isa else ''})"
        )
    info.update(extra)
    return info
