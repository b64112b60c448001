"""The `evaluate` metric modules shipped with the package, found by name so that nobody hard-codes their paths."""

from pathlib import Path

_METRICS_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> str:
    """Local path of a shipped metric module, for `evaluate.load(metric_path("hit_rate"))` (nothing is fetched)."""
    script = _METRICS_DIR / name / f"{name}.py"
    if not script.is_file():
        available = sorted(p.name for p in _METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no metric module {name!r} in {_METRICS_DIR}; available: {available}")
    return str(script.parent)


__all__ = ["metric_path"]
