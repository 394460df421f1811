"""One global batch over several processes (torchrun), computed as one process computes it.

A trainer's ranks all draw the same global batch of B samples and each trains on its slice
``x[rank::size]``. Inside ``with sharded(B, world):`` (nothing at all with one process):

* :func:`global_rows` gathers every rank's rows, with their gradient, into the global batch's
  order: the NT-Xent loss (``attacks.objectives``) uses it, so every rank computes the loss of the
  whole batch, every other image of it a negative, not of its slice;
* :class:`GlobalBatchNorm` (see :func:`convert_layers`) normalises a training batch by the global
  batch's statistics, and :class:`GlobalDropout` keeps this rank's rows of the mask one process
  would draw for the whole batch (from the same global RNG, so the RNG stays in step);
* :func:`shard_start` draws the PGD random start for the whole batch from the epoch's generator
  and keeps this rank's rows (so the generator, which every rank shares, advances as in one
  process).

Gradients: a loss computed from :func:`global_rows` is the same on every rank, and the backward
pass sends each rank only the gradient of its own rows; the statistics of GlobalBatchNorm are
all-reduced forward and backward. So each rank's parameter gradient is its part of the global
batch's, and the parts are summed (``all_reduce_grads(params, world, weight=1.0)``).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import World


@dataclass(frozen=True)
class Shard:
    """This rank's part of a global batch of ``batch`` samples: rows rank, rank + size, ..."""

    batch: int
    world: World

    def sizes(self) -> list[int]:
        """Rows of every rank, in rank order (they differ by at most one)."""
        return [len(range(r, self.batch, self.world.size)) for r in range(self.world.size)]

    @property
    def rows(self) -> int:
        return self.sizes()[self.world.rank]

    def take(self, t: Tensor, blocks: int = 1) -> Tensor:
        """This rank's rows of ``t``: ``blocks`` global batches stacked, (blocks * batch, ...)."""
        if blocks == 1:
            return t[self.world.rank::self.world.size]
        return torch.cat([b[self.world.rank::self.world.size] for b in t.split(self.batch)])


_ACTIVE: ContextVar[Shard | None] = ContextVar("robustlab_shard", default=None)


@contextmanager
def sharded(batch: int, w: World) -> Iterator[Shard | None]:
    """The block computes one step on this rank's slice of a global batch of ``batch`` samples
    (see the module docstring); with one process it changes nothing (and yields None)."""
    token = _ACTIVE.set(Shard(batch, w) if w.size > 1 else None)
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active_shard() -> Shard | None:
    """The shard of the step being computed, or None (one process, or outside a step)."""
    return _ACTIVE.get()


def _to_backend(t: Tensor) -> Tensor:
    """``t`` where the process group's backend reduces it (NCCL: this rank's GPU)."""
    if dist.get_backend() == "nccl":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t.cpu()


class _Gather(torch.autograd.Function):
    """All ranks' rows concatenated in rank order; backward: the gradient of this rank's rows.
    Right when the loss computed from the result is the same on every rank."""

    @staticmethod
    def forward(ctx, t: Tensor, sizes: list[int], rank: int) -> Tensor:
        ctx.start, ctx.n = sum(sizes[:rank]), sizes[rank]
        padded = _to_backend(t.new_zeros((max(sizes), *t.shape[1:])))
        padded[:t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad[ctx.start:ctx.start + ctx.n], None, None


def global_rows(*ts: Tensor) -> tuple[Tensor, ...]:
    """Inside a sharded step: each (rows, ...) tensor of this rank's slice as the (batch, ...)
    tensor of the global batch, in its order, differentiable (see the module docstring).
    Otherwise the tensors themselves."""
    shard = active_shard()
    if shard is None:
        return ts
    sizes, size = shard.sizes(), shard.world.size
    # gathered row j of rank r is global row r + j * size
    offsets = [sum(sizes[:r]) for r in range(size)]
    order = torch.tensor([offsets[i % size] + i // size for i in range(shard.batch)],
                         device=ts[0].device)
    out = []
    for t in ts:
        if t.shape[0] != shard.rows:
            from .errors import InputError

            raise InputError(f"a sharded step's tensor has {t.shape[0]} rows, but this rank's "
                             f"slice of the batch of {shard.batch} has {shard.rows}")
        out.append(_Gather.apply(t, sizes, shard.world.rank).index_select(0, order))
    return tuple(out)


class _AllSum(torch.autograd.Function):
    """The sum over ranks; backward: the sum over ranks of the gradients (every rank's loss
    depends on the sum, so every rank's part of the gradient reaches every summand)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        total = _to_backend(t).clone()
        dist.all_reduce(total)
        return total.to(t.device)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = _to_backend(grad).contiguous().clone()
        dist.all_reduce(total)
        return total.to(grad.device)


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the global batch inside a sharded
    step (two all-reduces per layer and pass); elsewhere, and in eval mode, plain batch norm.
    Same parameters, buffers and state-dict keys as the layer it replaces."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: Tensor) -> Tensor:
        if active_shard() is None or not self.training:
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # (N, C, ...); float32 or wider
        local = torch.cat([xf.sum(dims), xf.new_tensor([x.numel() // max(x.shape[1], 1)])])
        total = _AllSum.apply(local)
        count = total[-1]
        mean = total[:-1] / count
        centred = xf - mean.view(shape)
        var = _AllSum.apply((centred * centred).sum(dims)) / count  # biased, as BN normalises
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), count.detach())
        return y.to(x.dtype)

    @torch.no_grad()
    def _track(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        """The running statistics as batch norm updates them (no host sync)."""
        self.num_batches_tracked.add_(1)
        f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - f).add_(mean, alpha=f)
        self.running_var.mul_(1 - f).add_(var * n / (n - 1).clamp_min(1), alpha=f)  # unbiased


class GlobalDropout(nn.Dropout):
    """Dropout that, inside a sharded step, draws the mask of the global batch (as one process
    would, from the global RNG) and keeps this rank's rows; elsewhere plain dropout."""

    def forward(self, x: Tensor) -> Tensor:
        shard = active_shard()
        if shard is None or not self.training or self.p == 0:
            return super().forward(x)
        if self.p == 1:
            return x * 0.0
        # x: `blocks` slices stacked (an empty slice, only ever a batch's last rows, draws one)
        blocks = x.shape[0] // shard.rows if shard.rows else 1
        if x.shape[0] != blocks * shard.rows:  # not whole slices (a batch grown by a method's
            return super().forward(x)           # own rows): no global mask to take rows of
        # drawn in x's memory order, as F.dropout draws (channels_last: the masks of one process)
        fmt = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
               and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        noise = torch.empty((blocks * shard.batch, *x.shape[1:]), dtype=x.dtype, device=x.device,
                            memory_format=fmt)
        noise.bernoulli_(1 - self.p).div_(1 - self.p)  # what F.dropout draws for the whole batch
        return x * shard.take(noise, blocks)


def convert_layers(module: nn.Module) -> int:
    """Replace, in place, every batch norm of ``module`` by a :class:`GlobalBatchNorm` and every
    ``nn.Dropout`` by a :class:`GlobalDropout` sharing its parameters and buffers (state-dict
    keys unchanged). Returns how many layers were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
            setattr(module, name, _global_bn(child))
            count += 1
        elif type(child) is nn.Dropout:
            new = GlobalDropout(child.p, child.inplace)
            new.train(child.training)
            setattr(module, name, new)
            count += 1
        else:
            count += convert_layers(child)
    return count


def _global_bn(bn: _BatchNorm) -> GlobalBatchNorm:
    new = GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        setattr(new, key, getattr(bn, key))  # the same tensors: optimisers and hooks still apply
    new.train(bn.training)
    return new


def shard_start(x: Tensor, eps: float, generator: torch.Generator | None, *, blocks: int = 1,
                norm: str = "linf") -> Tensor | None:
    """Inside a sharded step: this rank's rows (``x``: ``blocks`` slices stacked) of the PGD
    random start one process draws for the global batch, to pass to ``pgd(init=...)``. None
    otherwise (the attack then draws its own start, as it always has)."""
    shard = active_shard()
    if shard is None:
        return None
    from .attacks.geometry import random_start

    # the global batch with this rank's rows in place: the start is drawn per pixel (linf) or
    # per row (l2), so this rank's rows come out as one process's, and the generator advances
    # by one global draw on every rank
    full = x.new_zeros((blocks * shard.batch, *x.shape[1:]))
    index = torch.cat([torch.arange(b * shard.batch, (b + 1) * shard.batch)[
        shard.world.rank::shard.world.size] for b in range(blocks)]).to(x.device)
    full.index_copy_(0, index, x.detach().to(full.dtype))
    return random_start(full, eps, norm, generator).index_select(0, index)
