"""Data-parallel training: the processes that ``torchrun`` starts, and what they exchange.

Every process trains on its own batches (its own random stream) and averages its gradients with
the others' after every backward pass, so that all of them take the same optimizer step and hold
the same weights; process 0 (the lead) writes the run directory.

The gradients are averaged by hand (:meth:`Processes.average_gradients`, one all-reduce per
network an optimizer steps) rather than by wrapping the networks in
``torch.nn.parallel.DistributedDataParallel``: the critic's WGAN-GP loss contains the gradient
penalty, a gradient computed with ``torch.autograd.grad(..., create_graph=True)`` and then
differentiated again (a double backward). DDP reduces gradients in hooks that fire during the
backward pass and does not support higher-order gradients (pytorch/pytorch#63929); with such a
penalty its reduced gradients have been reported wrong (pytorch/pytorch#47562). By hand, the
reduction happens once, after ``loss.backward()`` has finished, on the complete gradients, and
only for the networks the optimizer at hand steps (the critic's gradients from a generator step
are never sent).

With one process (no ``WORLD_SIZE`` in the environment, or 1) every method is a no-op.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from .engine import choose_device

__all__ = ("Processes", "setup")


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place among the training processes.

    Arguments:
        rank: this process's index (0: the lead, which writes the run directory).
        world: the number of processes.
        device: this process's device (``cuda:<LOCAL_RANK>`` on GPUs).
        owns_group: whether :func:`setup` started the process group (and :meth:`close` ends it).
    """

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @property
    def lead(self) -> bool:
        """Whether this is process 0."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, module: torch.nn.Module) -> None:
        """Give every process the lead's parameters and buffers."""
        if self.world > 1:
            import torch.distributed as dist

            for tensor in module.state_dict().values():
                dist.broadcast(tensor, 0)

    def average_gradients(self, module: torch.nn.Module) -> None:
        """All-reduce and average the gradients of ``module`` over the processes, in place (one
        flat all-reduce; parameters without a gradient are left out)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def gather_rng(self, rng: torch.Generator) -> list[torch.Tensor]:
        """The state of every process's random stream ``rng`` (index = rank), for a checkpoint."""
        state = rng.get_state()
        if self.world == 1:
            return [state]
        import torch.distributed as dist

        states = [torch.empty_like(state) for _ in range(self.world)]
        dist.all_gather(states, state)
        return states

    def weight_spread(self, module: torch.nn.Module) -> float:
        """The largest difference of any weight or buffer of ``module`` between two processes
        (0.0 when they are in sync, as they must be). Every process must call it."""
        if self.world == 1:
            return 0.0
        import torch.distributed as dist

        flat = torch.cat([t.detach().float().reshape(-1).cpu() for t in module.state_dict().values()])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        return max(float((g - gathered[0]).abs().max()) for g in gathered)

    def close(self) -> None:
        """End the process group if :func:`setup` started it (no communication threads left
        behind at interpreter exit)."""
        if self.owns_group:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


def setup(device_name: str) -> Processes:
    """Join the process group when launched by ``torchrun`` (gloo on CPUs, NCCL on GPUs).

    Arguments:
        device_name: ``train.device`` (see :func:`fastcalo.engine.choose_device`).

    Returns:
        This process's :class:`Processes`; rank 0 of 1 without ``torchrun``.

    Example:
        >>> processes = setup("cpu")   # not under torchrun
        >>> processes.lead, processes.world, processes.device.type
        (True, 1, 'cpu')
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes(0, 1, choose_device(device_name), owns_group=False)
    device = choose_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), world, device, owns_group=started)
