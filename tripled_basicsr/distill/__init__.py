"""The offline TripleD distillation pipeline (DESIGN.md 3-4; user doc: docs/distill.md).

    python -m tripled_basicsr.distill -opt options/distill_demo.yml
    torchrun --nproc_per_node=K -m tripled_basicsr.distill -opt X.yml

Modules: ``options`` (defaults, validation), ``backbone`` (timm model + offline-safe
weights), ``features`` (decode, embed, resumable memmap store, sharding), ``scoring``
(complexity/uncertainty), ``selection`` (k-means strata, quotas, Gumbel top-k,
baselines), ``mmd``, ``calibration``, ``report``, ``pipeline`` (``run_distill``),
``registry`` (add your own strategies).
"""
from tripled_basicsr.distill import scoring, selection  # noqa: F401  (register the built-in strategies)
from tripled_basicsr.distill.registry import COMPLEXITY, SELECTION, UNCERTAINTY  # noqa: F401


def run_distill(opt, progress=True):
    """See ``tripled_basicsr.distill.pipeline.run_distill``."""
    from tripled_basicsr.distill.pipeline import run_distill as _run
    return _run(opt, progress=progress)
