"""``python -m tripled_basicsr.train -opt X.yml``: BasicSR's training pipeline with the
plugin registered, rooted at the current directory (experiments/, tb_logger/ go there)."""
import os

import tripled_basicsr  # noqa: F401  (registers components, applies compat fixes)
from basicsr.train import train_pipeline

if __name__ == '__main__':
    train_pipeline(os.environ.get('TRIPLED_BASICSR_ROOT') or os.getcwd())
