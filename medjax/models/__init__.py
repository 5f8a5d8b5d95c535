"""Pure Flax models, each returning ``(logits, {"pre_logits": ..., <named features>})``.

Models know nothing of data or training. Look them up by name with
:func:`medjax.models.registry.get_model`.
"""
