"""Where a Simulator's work runs: file chunks in order (here, or on dask.distributed workers) and
lazy dask-awkward partitions.

Every particle's randomness is keyed by its global index (:mod:`fastcalo.engine`), so work split
into pieces must know the global index of each piece's first particle: serially it is counted as
the chunks go by; on dask workers the particles of every chunk (or partition) are counted first,
by tasks of their own.

dask, dask-awkward and dask.distributed objects have no static types: they are typed ``Any`` here.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import awkward as ak
import numpy as np
import torch

from .engine import Particles
from .particles import Reader, flatten, open_tree, standardize

if TYPE_CHECKING:
    from .datasets import ShowerData
    from .simulator import Simulator

__all__ = ("Chunk", "is_dask", "run_dask", "simulated_chunks")


class Chunk(NamedTuple):
    """The showers of input entries ``[start, stop)``: flat, with the particles per entry, and
    the input branches copied through (None if none)."""

    start: int
    stop: int
    showers: ShowerData
    counts: np.ndarray
    extra: Any  # an awkward array of the copied branches, or None


def is_dask(array: object) -> bool:
    """Whether ``array`` is a dask-awkward collection."""
    return type(array).__module__.startswith("dask_awkward")


def simulated_chunks(
    sim: Simulator,
    input: str | os.PathLike[str],
    reader: Reader,
    *,
    step_size: int,
    copy: Sequence[str] = (),
    client: Any = None,
) -> Iterator[Chunk]:
    """The showers of every particle of ``input``, ``step_size`` entries at a time, in order.

    Arguments:
        sim: the simulator.
        input: the ROOT file.
        reader: how to read its particles.
        step_size: entries per chunk.
        copy: input branches to copy through.
        client: a ``dask.distributed.Client``: chunks are then simulated on its workers (one
            model per worker), at most two per worker in flight, and yielded in order; None:
            here, reading the file once with :meth:`fastcalo.particles.Reader.iterate`.

    Yields:
        One :class:`Chunk` per ``step_size`` entries.
    """
    if client is None:
        first = 0
        for start, stop, table in reader.iterate(input, step_size=step_size):
            chunk = _simulate_chunk(sim, os.fspath(input), reader, start, stop, first, copy, table)
            first += len(chunk.showers)
            yield chunk
        return
    n_entries = _entries(input, reader)
    ranges = [(start, min(start + step_size, n_entries)) for start in range(0, n_entries, step_size)]
    path = os.fspath(input)
    counts = client.gather([client.submit(_count_chunk, path, reader, start, stop, pure=False) for start, stop in ranges])
    sizes = np.asarray(counts, dtype=np.int64)
    firsts = (np.cumsum(sizes) - sizes).tolist()  # the global index of each chunk's first particle (none for an empty tree)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    shared = client.scatter(sim, broadcast=True)
    pending: list[Any] = []
    todo = list(zip(ranges, firsts, strict=True))
    while todo or pending:
        while todo and len(pending) < 2 * workers:
            (start, stop), first_index = todo.pop(0)
            pending.append(client.submit(_simulate_chunk, shared, path, reader, start, stop, int(first_index), copy, pure=False))
        yield pending.pop(0).result()


def _entries(input: str | os.PathLike[str], reader: Reader) -> int:
    tree = open_tree(input, reader.tree)
    try:
        return int(tree.num_entries)
    finally:
        tree.file.close()


def _count_chunk(input: str, reader: Reader, start: int, stop: int) -> int:
    return len(flatten(reader.read(input, entry_start=start, entry_stop=stop))[0])


def _simulate_chunk(
    sim: Simulator,
    input: str,
    reader: Reader,
    start: int,
    stop: int,
    first: int,
    copy: Sequence[str],
    table: ak.Array | None = None,
) -> Chunk:
    """Simulate input entries [start, stop) whose first particle has global index ``first``
    (read here unless ``table`` holds them)."""
    if sim.threads:
        torch.set_num_threads(sim.threads)
    if table is None:
        table = reader.read(input, entry_start=start, entry_stop=stop)
    flat, counts = flatten(table)
    showers = sim.engine.simulate(Particles.from_records(flat), first)
    if counts is None:  # a flat tree: one particle per entry
        counts = np.ones(len(showers), dtype=np.int64)
    extra = None
    if copy:
        tree = open_tree(input, reader.tree)
        try:
            extra = tree.arrays(list(copy), entry_start=start, entry_stop=stop, library="ak")
        finally:
            tree.file.close()
    return Chunk(start, stop, showers, np.asarray(counts, dtype=np.int64), extra)


def run_dask(sim: Simulator, events: Any, *, particle: str | int | None, first_index: int, stream: Hashable | None) -> Any:
    """``sim.run`` of a dask-awkward collection: a lazy dask-awkward result, equal to the eager one.

    Building it computes nothing: each output partition depends on tasks, in the same graph, that
    count the particles of the partitions before it and so fix the global index of its first
    particle.
    """
    import dask
    import dask_awkward as dak

    parts = events.to_delayed()
    counts = [dask.delayed(_count_particles)(part, particle) for part in parts]
    offsets = [dask.delayed(sum)(counts[:i], first_index) for i in range(len(parts))]
    results = [dask.delayed(_run_partition)(sim, part, particle, offset, stream) for part, offset in zip(parts, offsets, strict=True)]
    empty = sim.run(ak.Array(events.form.length_zero_array()), particle=particle, stream=stream)
    meta = ak.Array(empty.layout.to_typetracer(forget_length=True))
    return dak.from_delayed(results, meta=meta, divisions=events.divisions if events.known_divisions else None)


def _count_particles(part: ak.Array, particle: str | int | None) -> int:
    return len(flatten(standardize(part, particle=particle))[0])


def _run_partition(sim: Simulator, part: ak.Array, particle: str | int | None, first_index: int, stream: Hashable | None) -> ak.Array:
    if sim.threads:
        torch.set_num_threads(sim.threads)
    return sim.run(part, particle=particle, first_index=first_index, stream=stream)
