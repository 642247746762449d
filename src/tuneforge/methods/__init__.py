"""Training methods: one folder each (config.py + recipe.py), found through ``registry.py``.

A method supplies its config class and a small object (the interface is in
``interface.py``): data → examples and batches, the model, the loss,
evaluation, how its output is saved. ``runner.py`` drives every method through
the same skeleton and knows none of them by name.
"""

from ..registry import config_class, get_method, method_names, register_method, unregister_method

__all__ = ["config_class", "get_method", "method_names", "register_method", "unregister_method"]
