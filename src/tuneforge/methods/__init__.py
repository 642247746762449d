"""Training methods: one folder each (config.py + recipe.py), found through ``registry.py``.

A method supplies its config class and a small object (the interface is in
``interface.py``): data → examples and batches, the model, the loss,
evaluation, how its output is saved. ``runner.py`` drives every method through
the same skeleton and knows none of them by name.

``tuneforge.methods.get_method`` etc. are the registry's functions, looked up on
first use: the registry imports each method's config module, which lives in
this package, so importing it here eagerly would be circular.
"""

_REGISTRY_NAMES = ("config_class", "get_method", "method_names", "register_method", "unregister_method")


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        from .. import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'tuneforge.methods' has no attribute {name!r}")


__all__ = list(_REGISTRY_NAMES)
