"""The torch side of each adapter kind: attach it to a model, save it, load it back.

Each module named by an `AdapterKind.torch_module` provides::

    attach(model, run, meta) -> model   # wraps/inserts the adapter, only it trainable
    save(model, directory, base_path=None, state_dict=None)  # the adapter alone, reloadable
    load(model, directory)               # weights saved by `save` into a model built the same way
    merge(base_model, directory) -> model  # plain weights for inference, when the kind can merge

`attach` marks the model with `vramplan_adapter` (the module's name) so the trainer knows how
to save it without asking which method it is.
"""

from __future__ import annotations

import importlib

MARK = "vramplan_adapter"


def adapter_module(run):
    """The torch module of `run`'s adapter kind, or None for methods without one."""
    adapter = run.method_record.adapter
    return None if adapter is None else importlib.import_module(adapter.torch_module)


def module_of(model):
    """The torch module that attached the adapter on `model`, or None (full fine-tuning)."""
    name = getattr(model, MARK, None)
    return None if name is None else importlib.import_module(name)
