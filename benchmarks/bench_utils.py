"""Shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""


def format_table(rows, columns):
    """A plain-text table of `rows` (dicts) over `columns`."""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)
