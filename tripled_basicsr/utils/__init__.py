"""Small shared helpers (file output hygiene, image conversion, safe YAML)."""
from .io import file_sha256, load_yaml_safe, tree_fingerprint
from .ownership import AtomicOutputDir
from .img import to_bgr_uint8

__all__ = ['AtomicOutputDir', 'file_sha256', 'load_yaml_safe', 'tree_fingerprint', 'to_bgr_uint8']
