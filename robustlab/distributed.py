"""Several processes (``torchrun``): process group set-up, sharding, gathering.

Under ``torchrun --nproc_per_node N robustlab ...`` every process runs the same command; robustlab
reads RANK/WORLD_SIZE/LOCAL_RANK from the environment, joins a process group (NCCL on GPUs, gloo on
CPUs), gives each process its slice of the data, and lets only rank 0 write files. With one
process nothing here does anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the job, joining the process group on first use under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(w: World, device: torch.device) -> torch.device:
    """With several processes on a GPU machine, each takes the GPU of its local rank."""
    if w.size > 1 and device.type == "cuda" and device.index is None:
        gpus = torch.cuda.device_count()
        if w.local_rank >= gpus:
            from .errors import ConfigError

            raise ConfigError(f"process {w.local_rank} of this machine has no GPU: {gpus} "
                              f"visible, so start at most {gpus} processes per machine "
                              "(torchrun --nproc_per_node), or run on the CPU with --device cpu")
        torch.cuda.set_device(w.local_rank)
        return torch.device("cuda", w.local_rank)
    return device


def gather_cat(t: torch.Tensor, w: World) -> torch.Tensor:
    """Concatenate each rank's tensor along dim 0 in rank order (all ranks get the result);
    ranks may hold different lengths."""
    if w.size == 1:
        return t
    backend_device = torch.device("cuda", torch.cuda.current_device()) if (
        dist.get_backend() == "nccl") else torch.device("cpu")
    n = torch.tensor([t.shape[0]], device=backend_device)
    sizes = [torch.zeros_like(n) for _ in range(w.size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=backend_device)
    padded[:t.shape[0]] = t.to(backend_device)
    parts = [torch.zeros_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)]).to(t.device)


def unshard(t: torch.Tensor, w: World) -> torch.Tensor:
    """Inverse of taking ``x[rank::size]`` on every rank: back to the original sample order."""
    if w.size == 1:
        return t
    parts = gather_cat(t, w)
    lengths = [len(range(r, _total(parts), w.size)) for r in range(w.size)]
    out = torch.empty_like(parts)
    start = 0
    for r, n in enumerate(lengths):
        out[r::w.size] = parts[start:start + n]
        start += n
    return out


def _total(parts: torch.Tensor) -> int:
    return parts.shape[0]


def all_mean(value: float, w: World) -> float:
    if w.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / w.size


def barrier(w: World) -> None:
    if w.size > 1:
        dist.barrier()


def broadcast_module(module: torch.nn.Module, w: World) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if w.size == 1:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def all_reduce_grads(params, w: World, weight: float | None = None) -> None:
    """Combine the gradients of all ranks in one flat all-reduce (what DDP does, without wrapping
    the module: attacks inside a training step differentiate the plain module w.r.t. its input).

    Args:
        params: the same parameters, in the same order, on every rank.
        weight: this rank's share of the global batch (local samples / global samples). Each
            rank's gradient, of the mean loss over its shard, is weighted by it and the results
            summed: the gradient of the mean over the global batch when shards differ in size.
            None: equal shares, a plain average.

    A parameter without a gradient on this rank (an empty shard computes none) contributes zeros,
    so every rank reduces the same flat tensor; it receives the combined gradient if any rank had
    one, and keeps None if none had.
    """
    if w.size == 1:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    missing = [p.grad is None for p in params]
    # dtypes and sizes depend only on the parameters, so every rank builds the same flat tensor;
    # its tail says, per parameter, how many ranks reached it
    flat = torch.cat([torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if p.grad is None
                      else p.grad.reshape(-1) for p in params]
                     + [torch.tensor([0.0 if m else 1.0 for m in missing], device=params[0].device)])
    scale = 1.0 if weight is None else weight * w.size  # 1.0 exactly when the shards are equal
    if scale != 1.0:
        flat[:-len(params)] *= scale
    dist.all_reduce(flat)
    flat /= w.size
    reached = flat[-len(params):].tolist() if any(missing) else [1.0] * len(params)
    offset = 0
    for p, got in zip(params, reached):
        g = flat[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
        if p.grad is not None:
            p.grad.copy_(g)
        elif got > 0:
            p.grad = torch.empty_like(p).copy_(g)


def average_buffers(module: torch.nn.Module, w: World) -> None:
    """Average floating-point buffers (batch-norm running statistics) over ranks."""
    if w.size == 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b.data)
            b.data /= w.size


def all_sum(t: torch.Tensor, w: World) -> torch.Tensor:
    if w.size > 1:
        dist.all_reduce(t)
    return t


def all_sum_named(sums: dict[str, torch.Tensor], w: World,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """Sum 0-d tensors by name over ranks, in one all-reduce; a name a rank lacks (it saw no
    samples) counts as zero there, so every rank takes part in the same collective."""
    if w.size == 1:
        return sums
    names: list = [None] * w.size
    dist.all_gather_object(names, sorted(sums))
    keys = sorted(set().union(*names))
    if not keys:
        return {}
    zero = torch.zeros((), device=device)
    t = all_sum(torch.stack([torch.as_tensor(sums.get(k, zero), device=device).float()
                             for k in keys]), w)
    return dict(zip(keys, t.unbind()))
