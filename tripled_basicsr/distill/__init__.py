"""The offline TripleD distillation pipeline (user doc: docs/distill.md; the method and our
choices: docs/method.md).

    python -m tripled_basicsr.distill -opt options/distill_demo.yml
    torchrun --nproc_per_node=K -m tripled_basicsr.distill -opt X.yml

Modules: ``options`` (defaults, validation), ``checks`` (value checks), ``registry``
(strategies and their signature-checked options), ``backbone`` (timm model + offline-safe
weights), ``features`` (decode, embed, resumable memmap store, sharding), ``scoring``
(complexity/uncertainty strategies), ``selection`` (k-means strata, quotas, Gumbel top-k,
baselines), ``calibration``, ``report``, ``dist`` (rank helpers), ``stages`` (one module a
stage), ``pipeline`` (``run_distill``: the stages in order).

Importing this package does not import BasicSR; only the calibration stage does (through
``tripled_basicsr.register()``), because the calibrator is a registered BasicSR arch.
"""
from tripled_basicsr.distill import scoring, selection  # noqa: F401  (register the built-in strategies)
from tripled_basicsr.distill.registry import COMPLEXITY, SELECTION, UNCERTAINTY  # noqa: F401


def run_distill(opt, progress=True):
    """See ``tripled_basicsr.distill.pipeline.run_distill``."""
    from tripled_basicsr.distill.pipeline import run_distill as _run
    return _run(opt, progress=progress)
