"""Data: the distilled-LMDB format and paired-source readers (no BasicSR import), and the
registered components, imported by ``tripled_basicsr.register()`` (see
``tripled_basicsr/_registry_scan.py``): every ``*_dataset.py`` (BasicSR's DATASET_REGISTRY)
and every ``*_sampler.py`` (our SAMPLER_REGISTRY, in ``train_loader.py``). Importing this
package alone registers nothing."""
