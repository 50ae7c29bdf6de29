"""Registered models: every `*_model.py` module here is imported by ``tripled_basicsr.register()`` (see
``tripled_basicsr/_registry_scan.py``) so its classes register with BasicSR. Importing this
package alone registers nothing and does not import BasicSR."""
