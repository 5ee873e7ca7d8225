"""Measuring `--offload-activations` on CPU, where host and device are the same memory.

transformers' `activation_checkpointing_enable(offload=True)` runs each non-reentrant checkpoint
under `torch.autograd.graph.save_on_cpu(pin_memory=True)`: what the checkpoint saves for its
recompute (the layer's inputs) is copied to pinned host RAM in forward and copied back when the
layer is recomputed in backward. On a CPU run both copies would land in the live-tensor count.
`HostLedger.checkpoint_func` is the same structure (saved-tensor hooks around the same
checkpoint) whose pack copies outside the tracker's view and adds the copy to a host-RAM ledger
(its live bytes and their peak), and whose unpack makes a tracked copy: the one a GPU run would
hold on the device while the layer is recomputed.
"""

from __future__ import annotations

import functools
import weakref

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.checkpoint import checkpoint


class HostLedger:
    """Bytes the offload hook holds in host RAM: live now, and the peak.

    `keep_values=False` (the fake-tensor tracer) keeps a meta placeholder instead of a host copy,
    and brings back an empty tensor of the same shape: fake tensors hold no values to copy.
    """

    def __init__(self, keep_values: bool = True) -> None:
        self.live_bytes = 0
        self.peak_bytes = 0
        self.packed = 0
        self.keep_values = keep_values

    def _freed(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def pack(self, tensor: torch.Tensor):
        with _disable_current_modes():  # the host copy is no device tensor: the tracker must not count it
            host = torch.empty_like(tensor, device="cpu").copy_(tensor) if self.keep_values else torch.empty_like(tensor, device="meta")
        nbytes = host.untyped_storage().nbytes() if self.keep_values else tensor.untyped_storage().nbytes()
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self.packed += 1
        weakref.finalize(host, self._freed, nbytes)
        return tensor.device, host

    def unpack(self, packed) -> torch.Tensor:
        device, host = packed
        if not self.keep_values:
            return torch.empty_like(host, device=device)  # the traced device copy (tracked)
        return host.to(device, copy=True)  # the device copy of the recomputed layer's inputs (tracked)

    def checkpoint_func(self, function, *args, **kwargs):
        """transformers' offloading checkpoint function, with this ledger's hooks for save_on_cpu's."""
        with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
            return checkpoint(function, *args, **kwargs)


def count_offload(model, ledger: HostLedger) -> None:
    """Point the model's checkpointed layers at `ledger.checkpoint_func` (non-reentrant, as built)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    func = functools.partial(ledger.checkpoint_func, use_reentrant=False)
    causal._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=func)
