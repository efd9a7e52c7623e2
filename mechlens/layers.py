"""Reaching a model's hidden layers through forward hooks, as Captum and TransformerLens do.

A layer is a named submodule of the model's torch module (``Model.layer_module(name)``, by default
``dict(module.named_modules())[name]``). Its output is reached with
:meth:`torch.nn.Module.register_forward_hook`, so the module may have skip connections, functional
ops (``torch.relu``, ``+``, ``torch.cat``) and any forward of its own: nothing needs the network to be
a sequence of layers.

- :func:`capture`: the layer's activations for a batch of windows (the forward stops at the layer).
- :func:`patched`: the module's output with the layer's output replaced by a function of it
  (activation patching: a lesion clamps units to baseline this way, :mod:`mechlens.lesion`).
- :func:`hook_split`: the default ``Model.split`` built from the two. ``below`` is :func:`capture`;
  ``above`` maps activations alone to rates by running the module with the layer's output replaced by
  the given activations. The input below the layer is then a fixed window (zeros): ``above`` is a
  function of the activations alone, as the attributors need, only when every path from the window to
  the output passes through the layer. :func:`hook_split` checks that (``above(below(x)) == module(x)``
  on random windows) and refuses a layer that a skip connection goes around, naming it; such a layer
  can still be patched (:func:`patched`), it cannot be split.

Only torch here, and no other mechlens module but the errors: the interfaces import this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mechlens.errors import UsageError

__all__ = ["HookedAbove", "HookedBelow", "capture", "find_module", "hook_split", "patched"]


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the layer's output is known."""


def find_module(module: torch.nn.Module, name: str, where: str = "the model") -> torch.nn.Module:
    """The submodule of ``module`` called ``name`` (``dict(module.named_modules())[name]``).

    Raises
    ------
    UsageError
        No such submodule; the message lists the names there are.
    """
    found = dict(module.named_modules())
    if name in found and name:
        return found[name]
    names = [n for n in found if n]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise UsageError(
        f"{where} has no submodule named {name!r} to hook the layer on (its submodules: {shown or 'none'}); "
        "name the layer after a submodule (module.named_modules()), or override Model.layer_module or Model.split"
    )


def _tensor(out: object, where: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise UsageError(
            f"{where} returns a {type(out).__name__}, not a tensor; a layer must be a submodule whose output is "
            "one tensor (batch, *unit_shape): name another submodule, or override Model.split"
        )
    return out


def capture(module: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, where: str = "the layer") -> torch.Tensor:
    """The output of submodule ``layer`` when ``module`` runs on ``x``; the forward stops there.

    Parameters
    ----------
    module : torch.nn.Module
        The whole network: windows (batch, history, y, x) -> rates (batch, cell).
    layer : torch.nn.Module
        A submodule of ``module``, called once per forward.
    x : torch.Tensor
        (batch, history, y, x) windows.

    Returns
    -------
    torch.Tensor
        (batch, *unit_shape), in the graph of ``x`` (gradients and ``torch.func`` transforms pass through).
    """
    got: list[torch.Tensor] = []

    def hook(_mod: torch.nn.Module, _inp: object, out: object) -> None:
        got.append(_tensor(out, where))
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        module(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not got:
        raise UsageError(
            f"{where} was not called when the model ran; hook a submodule that the forward calls, or override "
            "Model.split"
        )
    return got[0]


def patched(
    module: torch.nn.Module,
    layer: torch.nn.Module,
    x: torch.Tensor,
    patch: Callable[[torch.Tensor], torch.Tensor],
    where: str = "the layer",
) -> torch.Tensor:
    """``module(x)`` with the output ``z`` of submodule ``layer`` replaced by ``patch(z)`` (activation patching).

    Parameters
    ----------
    module, layer : torch.nn.Module
        The network and the submodule whose output is replaced; ``layer`` must be called exactly once
        per forward (a module reused at several depths is ambiguous).
    x : torch.Tensor
        (batch, history, y, x) windows.
    patch : callable
        Maps the layer's output (batch, *unit_shape) to what the rest of the network sees, same shape.

    Returns
    -------
    torch.Tensor
        The module's output (batch, cell).
    """
    calls = [0]

    def hook(_mod: torch.nn.Module, _inp: object, out: object) -> torch.Tensor:
        calls[0] += 1
        z = _tensor(out, where)
        new = patch(z)
        if tuple(new.shape) != tuple(z.shape):
            raise UsageError(
                f"{where}: the patched activations have shape {tuple(new.shape)}, the layer's output "
                f"{tuple(z.shape)}; give one row per window of the batch"
            )
        return new

    handle = layer.register_forward_hook(hook)
    try:
        out = module(x)
    finally:
        handle.remove()
    if calls[0] != 1:
        raise UsageError(
            f"{where} was called {calls[0]} times in one forward; a hooked layer must run exactly once per "
            "window (a module reused at several depths cannot be patched): name a submodule used once, or "
            "override Model.split"
        )
    return out


class HookedBelow(torch.nn.Module):
    """Windows (batch, history, y, x) -> the layer's activations (batch, *unit_shape), by a forward hook.

    ``module`` is registered as a submodule, so ``eval()``, ``to()`` and Captum's layer hooks reach it.
    """

    _layer: torch.nn.Module

    def __init__(self, module: torch.nn.Module, layer: torch.nn.Module, where: str = "the layer") -> None:
        super().__init__()
        self.module = module
        # a plain attribute: the layer is already registered inside ``module``
        object.__setattr__(self, "_layer", layer)
        self.where = where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return capture(self.module, self._layer, x, self.where)


class HookedAbove(torch.nn.Module):
    """Activations (batch, *unit_shape) -> rates (batch, cell): the module run with the layer's output replaced.

    The network below the layer runs on a fixed window (``context``, zeros by default) whose own
    activations are discarded; this is a function of the activations alone exactly when every path
    from the window to the output passes through the layer (:func:`hook_split` checks it).
    """

    context: torch.Tensor
    _layer: torch.nn.Module

    def __init__(
        self, module: torch.nn.Module, layer: torch.nn.Module, context: torch.Tensor, where: str = "the layer"
    ) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "_layer", layer)
        self.register_buffer("context", context)
        self.where = where

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.context.expand(z.shape[0], *self.context.shape[1:])
        return patched(self.module, self._layer, x, lambda _out: z.to(_out.dtype), self.where)


def hook_split(
    module: torch.nn.Module,
    layer: torch.nn.Module,
    window_shape: Sequence[int],
    where: str = "the layer",
    atol: float = 1e-4,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(below, above)`` at a submodule, through forward hooks: the default ``Model.split``.

    When ``module`` is an ``nn.Sequential`` and ``layer`` one of its direct children, the split is
    the two slices of the Sequential instead (``module[:i + 1]``, ``module[i + 1:]``, sharing its
    modules): exact, no extra forward pass, and inspectable layer by layer, so attributors that need
    a Sequential ``above`` (exact integrated gradients) work on a model that declares no split.

    Parameters
    ----------
    module : torch.nn.Module
        The network: windows (batch, history, y, x) -> rates (batch, cell), in eval mode.
    layer : torch.nn.Module
        The submodule whose output is the layer.
    window_shape : sequence of int
        (history, y, x), for the fixed window of ``above`` and the check.
    where : str
        The layer in words, for messages (``"layer 'block1' of model 'my-net'"``).
    atol : float
        Absolute tolerance (rates) of the check ``above(below(x)) == module(x)``, with rtol 1e-4.

    Returns
    -------
    below : torch.nn.Module
        Windows -> activations (a :class:`HookedBelow`: the forward stops at the layer).
    above : torch.nn.Module
        Activations -> rates (a :class:`HookedAbove`). It reruns the network below the layer on a zero
        window, so it costs a whole forward pass; override ``Model.split`` where the network can be
        sliced (the fast path).

    Raises
    ------
    UsageError
        The layer is not a submodule called once with one tensor output, or the output still depends on
        the window when the layer's activations are held fixed (a skip connection goes around the layer,
        or a second input): no ``above`` maps the activations alone to rates.
    """
    if isinstance(module, torch.nn.Sequential):
        for i, child in enumerate(module):
            if child is layer:
                return module[: i + 1], module[i + 1 :]
    try:
        param = next(module.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    shape = tuple(int(s) for s in window_shape)
    below = HookedBelow(module, layer, where)
    above = HookedAbove(module, layer, torch.zeros((1, *shape), device=device, dtype=dtype), where)
    # random windows: a path around the layer shows as a difference (a fixed seed keeps split deterministic)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, *shape), generator=gen).to(device=device, dtype=dtype)
    with torch.no_grad():
        full = module(x)
        back = above(below(x))
    scale = float(full.abs().max()) if full.numel() else 0.0
    if tuple(back.shape) != tuple(full.shape) or not torch.allclose(back, full, rtol=1e-4, atol=atol + 1e-4 * scale):
        gap = float((back - full).abs().max()) if back.shape == full.shape else float("nan")
        raise UsageError(
            f"{where} does not carry everything the model's output depends on: with its activations held fixed "
            f"the output still changes with the window (by up to {gap:.3g}), so a skip connection or another "
            "input goes around it and no function of its activations alone gives the rates. Attribute a layer "
            "that every path from the stimulus to the output passes through (a block's output rather than a "
            "layer inside it), or override Model.split; lesions (mechlens.lesion) still patch this layer"
        )
    return below, above
