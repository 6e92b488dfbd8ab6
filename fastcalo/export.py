"""Export a model's whole generation as one ONNX graph, for C++ frameworks (ONNX Runtime).

The graph is :class:`ShowerGraph`: condition encoding, energy model, generator and detector
response (noise and photo-statistics, zero suppression, rescaling to the sampled total), from the
particle's physical conditions and explicit random numbers to (N, 24, 24) cell energies in GeV.
No random number is drawn inside the graph: the caller draws them (standard normals ``z`` and
``noise``, uniforms ``u``) and so owns the seeding. Given the same inputs, the graph gives what
:meth:`fastcalo.model.ShowerModel.generate` gives for ``Conditions.encode(...)`` of the same
conditions, to float rounding (``tests/test_export.py`` measures how close).

Inputs (N is dynamic; ``noise`` only for a model with ``config.cell_noise``):

========== ============ ======================================================================
name       type, shape  meaning
========== ============ ======================================================================
energy     float32 (N,) incident energy, GeV
eta        float32 (N,) pseudorapidity
pdgid      int32 (N,)   PDG id: 22, 11 or -11 (see below for others)
impact_x   float32 (N,) impact point, mm, inside the central cell ([0, 10] mm by default)
impact_y   float32 (N,) impact point, mm, inside the central cell
z          float32 (N, :attr:`fastcalo.model.Generator.n_inputs`) standard normals
u          float32 (N,) uniforms in (0, 1), for the total energy
noise      float32 (N, 576) standard normals, one per cell (detector response)
========== ============ ======================================================================

Output ``showers``: float32 (N, 24, 24), GeV, ``showers[k, i, j]`` the cell i along x (the eta
direction) and j along y (phi), row-major as in every fastcalo file.

The Python path refuses what is outside the model (:class:`fastcalo.engine.Engine`); a graph
cannot raise. It is the caller's job to pass energies and eta inside the model's ranges and a
known PDG id; a row with an unknown PDG id comes out all NaN (never a plausible-looking shower),
and so does a row whose generation meets a NaN or inf, as in the Python path. Energies and eta
outside the ranges are extrapolated by the networks, unchecked.

The file and its use from C++ (Geant4's Par04 example style) and from Python: docs/export.md.

Example:
    >>> from fastcalo.model import DEFAULT_MODEL, load
    >>> model = load(DEFAULT_MODEL)
    >>> graph = ShowerGraph(model)
    >>> n, g = 2, torch.Generator().manual_seed(1)
    >>> energy, eta, pdgid = torch.tensor([10.0, 50.0]), torch.tensor([0.2, -0.5]), torch.tensor([22, 11], dtype=torch.int32)
    >>> x, y = torch.full((n,), 5.0), torch.full((n,), 2.5)
    >>> z, u = torch.randn((n, model.generator.n_inputs), generator=g), torch.rand(n, generator=g)
    >>> noise = torch.randn((n, 576), generator=g)
    >>> showers = graph(energy, eta, pdgid, x, y, z, u, noise)
    >>> c = model.conditions.encode(energy=energy, eta=eta, pdgid=pdgid, impact_x=x, impact_y=y)
    >>> reference = model.generate(c, energy, z, u, noise).reshape(n, 24, 24)
    >>> showers.shape, torch.allclose(showers, reference, rtol=1e-5, atol=1e-7)
    (torch.Size([2, 24, 24]), True)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .datasets import OutputExistsError, atomic_path
from .detector import PARTICLES
from .model import DEFAULT_MODEL, EnergyGenerator, EnergyModel, ShowerModel, load

if TYPE_CHECKING:
    import onnx

__all__ = (
    "DEFAULT_OPSET",
    "FORMAT",
    "INPUTS",
    "OUTPUT",
    "ShowerGraph",
    "check_output",
    "export_onnx",
    "normal_quantile",
    "onnx_problem",
    "read_metadata",
)

#: The ONNX opset the graph is written with by default (the lowest torch's exporter writes).
DEFAULT_OPSET = 18

#: ``metadata_props["fastcalo.format"]`` of every file :func:`export_onnx` writes: what marks a
#: file that ``overwrite`` may replace.
FORMAT = "fastcalo.onnx"
_FORMAT_VERSION = 1

#: The graph's inputs in order, with their element type and meaning (``noise`` only for a model
#: with ``config.cell_noise``).
INPUTS: dict[str, tuple[str, str]] = {
    "energy": ("float32 (N,)", "incident energy, GeV"),
    "eta": ("float32 (N,)", "pseudorapidity"),
    "pdgid": ("int32 (N,)", "PDG id; a row with an id the model does not know comes out all NaN"),
    "impact_x": ("float32 (N,)", "impact point x, mm, inside the central cell"),
    "impact_y": ("float32 (N,)", "impact point y, mm, inside the central cell"),
    "z": ("float32 (N, z_width)", "standard normals: the generator's latent vector and per-unit noise"),
    "u": ("float32 (N,)", "uniforms in (0, 1): the quantile of the shower's total energy"),
    "noise": ("float32 (N, n_cells * n_cells)", "standard normals, one per cell: the detector response"),
}

#: The graph's output.
OUTPUT = "showers"

# Giles' single-precision approximation of erfinv (M. Giles, "Approximating the erfinv
# function", GPU Computing Gems Jade Edition, 2011): polynomials in w - 2.5 (w < 5) and in
# sqrt(w) - 3, w = -log(1 - x^2), highest power first.
_ERFINV_CENTRAL = (
    2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
    -0.00125372503, -0.00417768164, 0.246640727, 1.50140941,
)  # fmt: skip
_ERFINV_TAIL = (
    -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
    -0.0076224613, 0.00943887047, 1.00167406, 2.83297682,
)  # fmt: skip


def normal_quantile(u: torch.Tensor) -> torch.Tensor:
    """Phi^-1(u), the standard normal quantile, as :class:`fastcalo.model.EnergyGenerator` takes
    it (``sqrt(2) erfinv(2u - 1)``, u clamped to [1e-7, 1 - 1e-7]), from operations that ONNX has
    (it has no erfinv): Giles' single-precision approximation of erfinv, whose relative error
    against ``torch.erfinv`` is below 4e-7 (3.6e-7 measured over (0, 1), tails included, in
    ``tests/test_export.py``).

    Arguments:
        u: uniforms, any shape, float32.

    Returns:
        The standard normal quantiles, same shape and dtype.

    References:
        M. Giles, "Approximating the erfinv function", GPU Computing Gems Jade Edition (2011).

    Example:
        >>> [round(v, 4) for v in normal_quantile(torch.tensor([0.5, 0.975, 0.01])).tolist()]
        [0.0, 1.96, -2.3263]
    """
    x = 2.0 * u.clamp(1e-7, 1 - 1e-7) - 1.0
    w = -torch.log((1.0 - x) * (1.0 + x))
    central, tail = w - 2.5, torch.sqrt(w) - 3.0
    p, q = torch.full_like(x, _ERFINV_CENTRAL[0]), torch.full_like(x, _ERFINV_TAIL[0])
    for a, b in zip(_ERFINV_CENTRAL[1:], _ERFINV_TAIL[1:], strict=True):
        p = a + p * central
        q = b + q * tail
    return math.sqrt(2.0) * (torch.where(w < 5.0, p, q) * x)


class ShowerGraph(nn.Module):
    """The whole generation of a :class:`fastcalo.model.ShowerModel` as one module of export-friendly
    operations, its random numbers as inputs: what :func:`export_onnx` writes as ONNX.

    ``forward(energy, eta, pdgid, impact_x, impact_y, z, u, noise)`` gives, to float rounding,
    ``model.generate(model.conditions.encode(...), energy, z, u, noise)`` reshaped to
    (N, side, side), with rows of unknown PDG ids all NaN (the module docstring has the inputs).
    It follows the model's own steps, written with what ONNX has: the energy model's bucket index
    as a count of quantile levels <= u (``torch.searchsorted`` does not export), the one-hot
    particle type as comparisons, the normal quantile of the ``"loss"`` energy mechanism by
    :func:`normal_quantile`, and zero suppression as a comparison (no in-place operation, no
    data-dependent branch).

    Arguments:
        model: a float32 model (eval mode is used for the export; the conv generator's batch
            norm then reads its running statistics).

    Raises:
        ValueError: a model whose parameters are not float32 (a half-precision Simulator's).

    Example:
        >>> from fastcalo.model import ModelConfig
        >>> model = ShowerModel(ModelConfig(latent_dim=4, generator_hidden=(16,), critic_hidden=(16,))).eval()
        >>> graph = ShowerGraph(model)
        >>> graph.input_names
        ('energy', 'eta', 'pdgid', 'impact_x', 'impact_y', 'z', 'u')
        >>> n = 3
        >>> out = graph(torch.full((n,), 10.0), torch.zeros(n), torch.tensor([22, 11, 211], dtype=torch.int32),
        ...             torch.full((n,), 5.0), torch.full((n,), 5.0), torch.randn(n, 4), torch.rand(n))
        >>> out.shape, out[:2].isfinite().all().item(), out[2].isnan().all().item()
        (torch.Size([3, 24, 24]), True, True)
    """

    levels: torch.Tensor  # (n_quantiles,) the energy model's quantile levels (a buffer, "model" energy)
    pdgids: torch.Tensor  # (n_particles,) int32, the one-hot columns' PDG ids (a buffer)

    def __init__(self, model: ShowerModel) -> None:
        super().__init__()
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
        if dtypes != ["float32"]:
            msg = f"the ONNX export needs a float32 model (the precision of a model file), found parameters of {dtypes}"
            raise ValueError(msg)
        self.model = model
        detector = model.detector
        self.side = detector.n_cells
        self.cell_noise = model.config.cell_noise
        self.photostatistics = model.config.photostatistics
        self.register_buffer("pdgids", torch.tensor(model.conditions.pdgids, dtype=torch.int32), persistent=False)
        ranges = detector.conditions
        self._log_low, self._log_high = (math.log(e) for e in ranges.energy)
        self._eta_max = max(abs(e) for e in ranges.eta)
        low, high = detector.central_cell
        self._centre, self._half = 0.5 * (low + high), 0.5 * (high - low)

    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs of :meth:`forward`, in order (``noise`` only with ``config.cell_noise``)."""
        names = tuple(INPUTS)
        return names if self.cell_noise else names[:-1]

    def encode(self, energy: torch.Tensor, eta: torch.Tensor, pdgid: torch.Tensor, impact_x: torch.Tensor, impact_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition vectors (N, width) float32, as :meth:`fastcalo.model.Conditions.encode`
        computes them (in float64, then float32), and whether each PDG id is known (N,) bool."""
        onehot = (pdgid[:, None] == self.pdgids[None, :]).to(torch.float64)
        columns = [
            (2.0 * (torch.log(energy.double()) - self._log_low) / (self._log_high - self._log_low) - 1.0)[:, None],
            eta.double()[:, None] / self._eta_max,
            onehot,
            (impact_x.double()[:, None] - self._centre) / self._half,
            (impact_y.double()[:, None] - self._centre) / self._half,
        ]
        return torch.cat(columns, dim=1).to(torch.float32), onehot.sum(dim=1) > 0

    def total_code(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The standardised deposited fraction r (N,) at uniforms ``u``: the energy model's
        :meth:`fastcalo.model.EnergyModel.sample` (its bucket index as a comparison count) or the
        energy generator's :meth:`fastcalo.model.EnergyGenerator.sample`."""
        energy = self.model.energy
        if isinstance(energy, EnergyGenerator):
            g = normal_quantile(u)
            shift: torch.Tensor = energy.net(torch.cat([c, g[:, None]], dim=1))
            return g + shift[:, 0]
        if not isinstance(energy, EnergyModel):  # pragma: no cover - the two kinds of ModelConfig.energy
            msg = f"expected an EnergyModel or an EnergyGenerator, found {type(energy).__name__}"
            raise TypeError(msg)
        levels, n = energy.levels, energy.n
        quantiles = energy.quantiles(c)  # offset + slope * shape, as sample() takes the columns it needs
        # searchsorted(levels, u, right=True) - 1, as a count of the levels <= u
        k = ((levels[None, :] <= u[:, None]).sum(dim=1) - 1).clamp(0, n - 2)
        t0, t1 = levels[k], levels[k + 1]
        frac = ((u - t0) / (t1 - t0)).clamp(0.0, 1.0)
        pair = torch.gather(quantiles, 1, torch.stack([k, k + 1], dim=1))
        inner = pair[:, 0] * (1 - frac) + pair[:, 1] * frac
        q0, q1, q_before, q_last = quantiles[:, 0], quantiles[:, 1], quantiles[:, n - 2], quantiles[:, n - 1]
        tau_low, tau_high = levels[0], 1.0 - levels[-1]
        slope_low = (q1 - q0) / (levels[1] - levels[0])
        slope_high = (q_last - q_before) / (levels[-1] - levels[-2])
        uc = u.clamp(1e-7, 1 - 1e-7)
        low = q0 + slope_low * tau_low * torch.log(uc / tau_low)
        high = q_last - slope_high * tau_high * torch.log((1 - uc) / tau_high)
        return torch.where(u < levels[0], low, torch.where(u > levels[-1], high, inner))

    def forward(
        self,
        energy: torch.Tensor,
        eta: torch.Tensor,
        pdgid: torch.Tensor,
        impact_x: torch.Tensor,
        impact_y: torch.Tensor,
        z: torch.Tensor,
        u: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Showers (N, side, side) float32 in GeV (the inputs: the module docstring)."""
        model = self.model
        c, known = self.encode(energy, eta, pdgid, impact_x, impact_y)
        r_code = self.total_code(c, u)
        # ShowerModel.cells when generating: softmax shape times the total, response, threshold, rescaling
        shape = torch.softmax(model.generator(z, c, r_code), dim=1)
        total = (model.preprocessing.decode_r(r_code).clamp_min(0.0) * energy)[:, None]
        deposit = shape * total
        response = model.detector.response
        if self.cell_noise:
            if noise is None:
                msg = "this model adds cell noise (config.cell_noise): pass noise, standard normals of shape (N, n_cells)"
                raise ValueError(msg)
            if self.photostatistics:
                spread = (deposit.clamp_min(0.0) / response.photoelectrons_per_gev + response.noise**2).sqrt()
                deposit = deposit + spread * noise
            else:
                deposit = deposit + noise * response.noise
        broken = ~torch.isfinite(deposit.sum(dim=1)) | ~torch.isfinite(total[:, 0]) | ~known
        threshold = model.preprocessing.threshold
        zero = torch.zeros((), dtype=deposit.dtype)
        kept = torch.where(deposit >= threshold, deposit, zero)  # NaN compares false: 0, as zero_suppress_
        cells = kept * (total / kept.sum(dim=1, keepdim=True).clamp_min(1e-12))
        if self.cell_noise:  # the noise can make the factor < 1: the threshold again
            cells = torch.where(cells >= threshold, cells, zero)
        cells = torch.where(broken[:, None], torch.full((), float("nan"), dtype=cells.dtype), cells)
        return cells.reshape(-1, self.side, self.side)


def onnx_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the file at ``path`` is not an ONNX export of fastcalo that ``overwrite`` may replace,
    or None if it is one (its ``metadata_props`` say ``"fastcalo.format": "fastcalo.onnx"``).

    Example (needs onnx; run by tests/test_export.py):
        >>> import tempfile, pathlib
        >>> mine = pathlib.Path(tempfile.mkdtemp()) / "notes.onnx"
        >>> _ = mine.write_text("my notes")
        >>> onnx_problem(mine)  # doctest: +SKIP
        'it is not a readable ONNX model'
    """
    target = Path(path)
    if target.is_symlink():
        return "it is a symbolic link"
    if not target.is_file():
        return "it is not a regular file"
    try:
        meta = read_metadata(target)
    except ValueError:
        return "it is not a readable ONNX model"
    if meta.get("fastcalo.format") != FORMAT:
        return f'its metadata has no "fastcalo.format": "{FORMAT}"'
    return None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (all strings; those of fastcalo start ``fastcalo.``).

    Raises:
        ImportError: onnx is not installed (``pip install 'fastcalo[onnx]'``).
        ValueError: the file is not a readable ONNX model.
    """
    onnx = _import_onnx()
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, RuntimeError, ValueError) as err:
        msg = f"{path}: not a readable ONNX model ({type(err).__name__}: {err})"
        raise ValueError(msg) from err
    if not proto.graph.node:
        msg = f"{path}: not a readable ONNX model (no graph)"
        raise ValueError(msg)
    return {p.key: p.value for p in proto.metadata_props}


def export_onnx(
    path: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | ShowerModel = "default",
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> Path:
    """Write the whole generation of ``model`` (:class:`ShowerGraph`) as one ONNX file, atomically.

    The file's ``metadata_props`` hold its format (``fastcalo.format``), the fastcalo version
    that wrote it, the model's version, weights sha256 and physics sha256 (for a model loaded from
    a directory), the inputs and output (JSON), the width of ``z``, the particles (name: PDG id),
    the condition ranges, the detector (its ``to_dict()`` as JSON) and, for placing the cells, its
    ``n_cells`` and ``cell_size_mm`` and the layout of the output (docs/export.md).

    Arguments:
        path: the ONNX file to write (``.onnx``).
        model: ``"default"`` (the shipped model), a model directory, or a float32
            :class:`fastcalo.model.ShowerModel`.
        opset: the ONNX opset (>= 18, what torch's exporter writes).
        overwrite: replace an existing file, and only one that :func:`export_onnx` wrote
            (:func:`onnx_problem`).

    Returns:
        ``path`` as a Path.

    Raises:
        ImportError: onnx or onnxscript is not installed (``pip install 'fastcalo[onnx]'``).
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        FileExistsError: ``path`` exists and is not a fastcalo ONNX export (never replaced).
        ValueError: an opset below 18, a model that is not float32.
        fastcalo.model.ModelFileError: a model directory that does not load.

    Example (needs onnx and onnxscript; run by tests/test_export.py):
        >>> import tempfile, pathlib
        >>> target = export_onnx(pathlib.Path(tempfile.mkdtemp()) / "model.onnx")  # doctest: +SKIP
        >>> meta = read_metadata(target)  # doctest: +SKIP
        >>> meta["fastcalo.format"], meta["fastcalo.n_cells"], meta["fastcalo.cell_size_mm"]  # doctest: +SKIP
        ('fastcalo.onnx', '24', '10.0')
    """
    target = Path(path)
    check_output(target, overwrite=overwrite)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 18:
        msg = f"opset must be an integer >= 18 (torch's ONNX exporter writes opset 18 and later), got {opset!r}"
        raise ValueError(msg)
    onnx = _import_onnx()
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export needs it)
    except ImportError as err:
        msg = "the ONNX export needs onnxscript (torch's ONNX exporter): pip install 'fastcalo[onnx]'"
        raise ImportError(msg) from err
    if isinstance(model, ShowerModel):
        shower_model = model
    else:
        shower_model = load(DEFAULT_MODEL if str(model) == "default" else Path(model))
    was_training = shower_model.training
    shower_model.eval()
    try:
        graph = ShowerGraph(shower_model).eval()
        proto = _to_onnx(graph, opset)
    finally:
        shower_model.train(was_training)
    onnx.helper.set_model_props(proto, _metadata(graph))
    proto.producer_name = "fastcalo"
    proto.doc_string = "fastcalo shower generation: conditions and random numbers in, cell energies (GeV) out; see fastcalo's docs/export.md"
    onnx.checker.check_model(proto)
    with atomic_path(target, overwrite=overwrite) as tmp:
        onnx.save(proto, str(tmp))
    return target


def check_output(path: Path, *, overwrite: bool) -> None:
    """Refuse an output that exists, unless ``overwrite`` and it is a fastcalo ONNX export.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
        FileExistsError: ``path`` exists (or is a link) and is not a fastcalo ONNX export.
    """
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise OutputExistsError(path)
    problem = onnx_problem(path)
    if problem is not None:
        msg = f"{path} already exists and is not an ONNX export of fastcalo ({problem}); refusing to replace it: choose another output file"
        raise FileExistsError(msg)


def _import_onnx() -> Any:  # the onnx module (typed, but an optional dependency)
    try:
        import onnx
    except ImportError as err:
        msg = "the ONNX export needs onnx: pip install 'fastcalo[onnx]'"
        raise ImportError(msg) from err
    return onnx


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what torch's exporter says about itself on every export, and nothing else: its
    progress lines and its log lines about torchvision's operators (not used here) go to the
    ``torch.onnx`` logger; a FutureWarning from torch's own use of a deprecated pytree class
    (``LeafSpec``) inside ``torch.export``; and a UserWarning that the name of the batch axis is
    "not used" for every input after the first, which all share it (the axis is named ``batch``
    in the file all the same). pytest's ``filterwarnings = error`` would turn them into failures."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _to_onnx(graph: ShowerGraph, opset: int) -> onnx.ModelProto:
    """The ONNX model of ``graph`` with a dynamic batch dimension."""
    n = 2  # example rows; the batch dimension is declared dynamic
    device = next(graph.model.parameters()).device
    side = graph.side
    example: list[torch.Tensor] = [
        torch.full((n,), 10.0, device=device),
        torch.zeros(n, device=device),
        torch.full((n,), PARTICLES["photon"], dtype=torch.int32, device=device),
        torch.full((n,), 5.0, device=device),
        torch.full((n,), 5.0, device=device),
        torch.zeros((n, graph.model.generator.n_inputs), device=device),
        torch.full((n,), 0.5, device=device),
    ]
    if graph.cell_noise:
        example.append(torch.zeros((n, side * side), device=device))
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in example)
    with _quiet_exporter():
        program = torch.onnx.export(
            graph,
            tuple(example),
            input_names=list(graph.input_names),
            output_names=[OUTPUT],
            opset_version=opset,
            dynamic_shapes=dynamic,
            dynamo=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns the program
        msg = "torch.onnx.export returned no program"
        raise RuntimeError(msg)
    proto: onnx.ModelProto = program.model_proto
    return proto


def _metadata(graph: ShowerGraph) -> dict[str, str]:
    """The ``metadata_props`` of the exported file (all values strings)."""
    from . import __version__

    model = graph.model
    detector = model.detector
    meta = model.metadata
    low, high = detector.central_cell
    z_width = model.generator.n_inputs
    n_total = detector.n_total_cells
    inputs = [
        {"name": name, "type": kind.replace("z_width", str(z_width)).replace("n_cells * n_cells", str(n_total)), "meaning": meaning}
        for name, (kind, meaning) in INPUTS.items()
        if name in graph.input_names
    ]
    values: dict[str, object] = {
        "fastcalo.format": FORMAT,
        "fastcalo.format_version": _FORMAT_VERSION,
        "fastcalo.exported_by": __version__,
        "fastcalo.model_version": meta.get("fastcalo_version", "unsaved"),
        "fastcalo.weights_sha256": meta.get("weights_sha256", "unsaved"),
        "fastcalo.physics_sha256": meta.get("physics_sha256", "unsaved"),
        "fastcalo.inputs": json.dumps(inputs),
        "fastcalo.output": json.dumps(
            {"name": OUTPUT, "type": f"float32 (N, {detector.n_cells}, {detector.n_cells})", "meaning": "cell energies, GeV"}
        ),
        "fastcalo.z_width": z_width,
        "fastcalo.cell_noise": json.dumps(graph.cell_noise),
        "fastcalo.particles": json.dumps({p: PARTICLES[p] for p in detector.conditions.particles}),
        "fastcalo.energy_range_gev": json.dumps(list(detector.conditions.energy)),
        "fastcalo.eta_range": json.dumps(list(detector.conditions.eta)),
        "fastcalo.impact_range_mm": json.dumps([low, high]),
        "fastcalo.n_cells": detector.n_cells,
        "fastcalo.cell_size_mm": detector.cell_size,
        "fastcalo.layout": (
            f"showers[k, i, j]: cell i along x (the eta direction), j along y (phi), row-major; "
            f"the centre of cell (i, j) at x = (i + 0.5) * {detector.cell_size} - {detector.half_width} mm, "
            f"y = (j + 0.5) * {detector.cell_size} - {detector.half_width} mm; the impact point lies in cell "
            f"({detector.n_cells // 2}, {detector.n_cells // 2})"
        ),
        "fastcalo.detector": json.dumps(detector.to_dict()),
    }
    return {key: value if isinstance(value, str) else str(value) for key, value in values.items()}
