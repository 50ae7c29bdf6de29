"""``SAMPLER_REGISTRY``: train samplers selectable with ``datasets.train.sampler.type``.

BasicSR has no sampler registry (``basicsr/train.py`` always builds ``EnlargedSampler``).
Register a sampler class with ``@SAMPLER_REGISTRY.register()`` in a file named
``tripled_basicsr/data/<name>_sampler.py``: ``tripled_basicsr.register()`` imports every such
file (``_registry_scan.py``), and ``data/train_loader.py`` builds the class named by
``datasets.train.sampler.type``.
"""
from basicsr.utils.registry import Registry

SAMPLER_REGISTRY = Registry('sampler')
