"""The name transformers gives the KV cache: ``cache`` from 5.24 on, ``past_key_values`` before.

transformers 5.24 renamed the forward's argument and the output's field; the old
name still works but logs "`past_key_values`/`cache_params` are deprecated" once
per process, into the user's run log. tuneforge supports transformers >= 5.0, so
it asks which name the installed release uses.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cache_name() -> str:
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__) >= Version("5.24.0.dev0") else "past_key_values"
