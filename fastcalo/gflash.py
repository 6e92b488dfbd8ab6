"""The parametrised peer: GFlash-style showers (Grindhammer-Peters), fitted to the reference MC.

What a Geant4 user would pick instead of a GAN: each shower is a set of energy *spots* laid along
its axis by a gamma-function longitudinal profile whose maximum T and shape alpha fluctuate
(correlated) from shower to shower, and spread around the axis by a two-component (core and
tail) radial profile that widens with depth. A photon converts first (an exponential depth of
mean 9/7 X0) and then showers as an electron of its full energy (the e+e- pair's opening angle,
of order m_e/E, is neglected, so its two showers are laid as one). The axis is the particle's line
of flight, tilted by the incidence angle of eta, through the impact point in the central cell
(:func:`fastcalo.mc.line_of_flight`, as the MC starts its cascades); spots outside the block (25
X0 deep) leak. The deposits then go through the MC's own detector response
(:func:`fastcalo.mc.detector_response`). Parameters start from the published values (and the CMS
tune for PbWO4) and are fitted to the reference MC by ``scripts/fit_gflash.py``; the fitted set
ships as ``fastcalo/models/gflash/parameters.json`` (plain JSON, never pickled).

``fastcalo.Simulator(model="gflash")`` and ``fastcalo simulate --model gflash`` run it through the
one sampling path (:class:`GFlashEngine`, a :class:`fastcalo.engine.Engine`): the same seeding by
global index, the same out-of-range policy and output checks as the GAN.

Example:
    >>> import numpy as np
    >>> from fastcalo.gflash import GFlash
    >>> result = GFlash.load().simulate([10.0, 50.0], eta=0.3, particle="electron", seed=1)
    >>> result.showers.images.shape, np.round(result.showers.images.sum(axis=(1, 2)) / [10.0, 50.0], 1).tolist()
    ((2, 24, 24), [1.0, 1.0])

References:
    G. Grindhammer and S. Peters, "The parameterized simulation of electromagnetic showers in
    homogeneous and sampling calorimeters", hep-ex/0001020 (and G. Grindhammer, M. Rudowicz,
    S. Peters, NIM A290 (1990) 469). Geant4's implementation: ``GFlashHomoShowerParameterisation.cc``
    and ``GVFlashHomoShowerTuning.hh``. The PbWO4 tune of CMS: ``GflashEMShowerProfile.cc``
    (CMSSW SimGeneral/GFlash).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from .datasets import ShowerData
from .detector import DEFAULT_DETECTOR, PARTICLES, Detector, as_pdgids, pdgid_of
from .engine import Engine, Particles, check_seed

__all__ = (
    "DEFAULT_PARAMETERS", "GFlash", "GFlashEngine", "GFlashParameters", "GFlashResult", "load_parameters", "longitudinal_profile", "radial_profile", "save_parameters", "stream_seed",
)

#: The shipped parameters, fitted to the reference MC (``scripts/fit_gflash.py``).
DEFAULT_PARAMETERS = Path(__file__).resolve().parent / "models" / "gflash" / "parameters.json"

#: What a parameter file says it is.
FORMAT = "fastcalo.gflash"

_KIND_OF_PDGID = {22: 0, 11: 1, -11: 2}
_LONGITUDINAL_BIN_X0 = 0.25
_LONGITUDINAL_BINS = 240


@dataclass(frozen=True)
class GFlashParameters:
    """The parametrisation's constants. The defaults are the published ones (the CMS PbWO4 tune
    where it exists, Grindhammer-Peters elsewhere), with every fitted scale at 1.

    Longitudinal (t in X0, y = E / ``critical_energy``): per shower,
    <ln T> = ln(ln y - ``t_offset``), <ln alpha> = ln(``alpha_intercept`` + (``alpha_slope`` +
    ``alpha_slope_z`` / Z) ln y), sigma = ``fluctuation_scale`` / (a + b ln y) with (a, b) =
    ``sigma_ln_t`` and ``sigma_ln_alpha``, their correlation ``correlation`` = (c0, c1): c0 + c1 ln y.

    Radial (r in Moliere radii, tau = t / T, E in GeV): the published core radius, tail radius and
    core probability as functions of Z, E and tau (:data:`fastcalo._gflash` evaluates them),
    multiplied by ``core_scale``, ``tail_scale`` and ``core_probability_scale``.

    Spots: N = ``spot_scale`` x 93 ln(Z) E^``spot_power``, laid by a gamma profile with
    T_s = T (0.698 + 0.00212 Z) and alpha_s = alpha (0.639 + 0.00334 Z).

    ``conversion_depth``: a photon's mean conversion depth, X0. ``visible``: (v0, v1): the shower
    gives the block the fraction v0 + v1 ln(E/GeV) of its energy (the rest is what the MC loses
    without the profile saying so: backscatter, albedo, low-energy photons escaping).
    """

    z_eff: float = 68.36
    critical_energy: float = 8.6155e-3  # GeV
    t_offset: float = 0.7157
    alpha_intercept: float = 0.7996
    alpha_slope: float = 0.4581
    alpha_slope_z: float = 1.8628
    sigma_ln_t: tuple[float, float] = (-1.4, 1.26)
    sigma_ln_alpha: tuple[float, float] = (-0.58, 0.86)
    correlation: tuple[float, float] = (0.705, -0.023)
    fluctuation_scale: float = 1.0
    core_scale: float = 1.0
    tail_scale: float = 1.0
    core_probability_scale: float = 1.0
    spot_scale: float = 1.0
    spot_power: float = 0.876
    conversion_depth: float = 9.0 / 7.0
    visible: tuple[float, float] = (1.0, 0.0)

    def __post_init__(self) -> None:
        positive = ("z_eff", "critical_energy", "fluctuation_scale", "core_scale", "tail_scale", "spot_scale", "conversion_depth")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                msg = f"GFlashParameters.{name} must be a finite number > 0, got {value!r}"
                raise ValueError(msg)
        for name in ("sigma_ln_t", "sigma_ln_alpha", "correlation", "visible"):
            value = getattr(self, name)
            if len(value) != 2 or not all(math.isfinite(v) for v in value):
                msg = f"GFlashParameters.{name} must be two finite numbers (intercept, slope in ln), got {value!r}"
                raise ValueError(msg)

    def vector(self, detector: Detector = DEFAULT_DETECTOR) -> npt.NDArray[np.float64]:
        """The kernel's parameter vector (layout: the ``P_*`` indices of :mod:`fastcalo._gflash`).

        Example:
            >>> GFlashParameters().vector().shape
            (33,)
        """
        from . import _gflash as k

        z = self.z_eff
        v = np.zeros(k.N_PARAMETERS)
        v[k.P_EC], v[k.P_T_OFFSET] = self.critical_energy, self.t_offset
        v[k.P_A0], v[k.P_A_SLOPE] = self.alpha_intercept, self.alpha_slope + self.alpha_slope_z / z
        v[k.P_ST0], v[k.P_ST1] = self.sigma_ln_t
        v[k.P_SA0], v[k.P_SA1] = self.sigma_ln_alpha
        v[k.P_RHO0], v[k.P_RHO1] = self.correlation
        v[k.P_FLUCT] = self.fluctuation_scale
        # Grindhammer-Peters radial profile (hep-ex/0001020, as in Geant4's GFlashHomoShowerParameterisation)
        v[k.P_Z1_0], v[k.P_Z1_1], v[k.P_Z2] = 0.0251, 0.00319, 0.1162 - 0.000381 * z
        v[k.P_K1], v[k.P_K2], v[k.P_K3] = 0.659 - 0.00309 * z, 0.645, -2.59
        v[k.P_K4_0], v[k.P_K4_1] = 0.3585, 0.0412
        v[k.P_P1], v[k.P_P2] = (2.632 - 0.00094 * z) * self.core_probability_scale, 0.401 + 0.00187 * z
        v[k.P_P3_0], v[k.P_P3_1] = 1.313, -0.0686
        v[k.P_CORE], v[k.P_TAIL] = self.core_scale, self.tail_scale
        v[k.P_SPOT_N], v[k.P_SPOT_POWER] = self.spot_scale * 93.0 * math.log(z), self.spot_power
        v[k.P_SPOT_T], v[k.P_SPOT_A] = 0.698 + 0.00212 * z, 0.639 + 0.00334 * z
        v[k.P_CONVERSION] = self.conversion_depth
        v[k.P_VIS0], v[k.P_VIS1] = self.visible
        v[k.P_MOLIERE] = detector.material.moliere_radius
        return v

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GFlashParameters:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError naming unknown fields and the expected ones.

        Example:
            >>> GFlashParameters.from_dict(GFlashParameters().to_dict()) == GFlashParameters()
            True
        """
        names = sorted(f.name for f in fields(cls))
        unknown = sorted(set(values) - set(names))
        if unknown:
            msg = f"unknown GFlash parameter(s) {unknown}; expected some of {names}"
            raise ValueError(msg)
        arguments: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
        return cls(**arguments)


def load_parameters(path: str | os.PathLike[str] = DEFAULT_PARAMETERS) -> tuple[GFlashParameters, dict[str, Any]]:
    """The parameters of a parameter file and the file's other entries (the fit's record).

    Raises:
        ValueError: a file that is not a fastcalo GFlash parameter file.
    """
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("parameters"), dict):
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        msg = f"{path}: expected a GFlash parameter file (format {FORMAT!r} with a 'parameters' table), found format {found!r}"
        raise ValueError(msg)
    return GFlashParameters.from_dict(record["parameters"]), record


def save_parameters(
    parameters: GFlashParameters, path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None, overwrite: bool = False
) -> Path:
    """Write a parameter file atomically (JSON): ``format``, ``parameters`` and ``extra``'s entries."""
    from . import __version__
    from .datasets import atomic_path

    record: dict[str, Any] = {"format": FORMAT, "fastcalo_version": __version__, "parameters": parameters.to_dict()}
    record.update(extra or {})
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return Path(path)


def longitudinal_profile(t: npt.ArrayLike, alpha: float, beta: float) -> npt.NDArray[np.float64]:
    """The gamma-function profile f(t) = (beta t)^(alpha-1) beta exp(-beta t) / Gamma(alpha), per X0.

    Its integral is 1, its mean alpha / beta and its maximum at T = (alpha - 1) / beta.

    Example:
        >>> t = np.linspace(0.0, 60.0, 60_001)
        >>> round(float(np.trapezoid(longitudinal_profile(t, 4.0, 0.5), t)), 6)
        1.0
    """
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_f = (alpha - 1.0) * np.log(beta * t) + math.log(beta) - beta * t - math.lgamma(alpha)
    return np.where(t > 0, np.exp(log_f), 0.0)


def radial_profile(r: npt.ArrayLike, core: float, tail: float, probability: float) -> npt.NDArray[np.float64]:
    """The two-component radial profile f(r) = p 2r Rc^2/(r^2+Rc^2)^2 + (1-p) 2r Rt^2/(r^2+Rt^2)^2.

    r, ``core`` (Rc) and ``tail`` (Rt) in Moliere radii; its integral over r >= 0 is 1, and the
    radius r = R sqrt(u / (1 - u)) of a uniform u follows each component.

    Example:
        >>> r = np.geomspace(1e-7, 1e4, 200_001)
        >>> round(float(np.trapezoid(radial_profile(r, 0.1, 0.5, 0.6), r)), 5)
        1.0
    """
    r = np.asarray(r, dtype=np.float64)
    def one(radius: float) -> npt.NDArray[np.float64]:
        return 2.0 * r * radius**2 / (r**2 + radius**2) ** 2
    return probability * one(core) + (1.0 - probability) * one(tail)


def stream_seed(seed: int, stream: Sequence[int] = ()) -> int:
    """The 64-bit key of the peer's random streams for a seed and a stream key
    (:func:`fastcalo.engine.stream_key`); shower i then draws from (key, i, 0..2).

    Example:
        >>> stream_seed(1) == stream_seed(1, ()), stream_seed(1) == stream_seed(1, (5,))
        (True, False)
    """
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *(int(s) for s in stream), 0x9F1A5]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class GFlashResult:
    """What :meth:`GFlash.simulate` returns.

    ``showers``: the measured showers (after the detector response, unless switched off).
    ``true_images``: (N, n, n) deposits before the response, GeV. ``lost``: (N,) energy that did
    not reach the block (leakage, and the invisible share ``1 - visible``), GeV.
    ``longitudinal``: (N, 240) deposits in 0.25 X0 bins of depth along the axis from the entry
    point (as :class:`fastcalo.mc.MCResult`), or None.
    """

    showers: ShowerData
    true_images: npt.NDArray[np.float64]
    lost: npt.NDArray[np.float64]
    longitudinal: npt.NDArray[np.float64] | None
    bin_width: float = _LONGITUDINAL_BIN_X0


@dataclass
class GFlash:
    """The parametrised shower generator for one calorimeter.

    Arguments:
        parameters: the constants (default: the published ones; :meth:`load` for the fitted set).
        detector: the calorimeter (its geometry and response; energies GeV, lengths mm).
    """

    parameters: GFlashParameters = field(default_factory=GFlashParameters)
    detector: Detector = DEFAULT_DETECTOR

    @classmethod
    def load(cls, path: str | os.PathLike[str] = DEFAULT_PARAMETERS, *, detector: Detector = DEFAULT_DETECTOR) -> GFlash:
        """The peer with the parameters of a file (default: the shipped, fitted ones)."""
        return cls(load_parameters(path)[0], detector)

    def with_parameters(self, **changes: Any) -> GFlash:
        """A copy with some parameters changed (``peer.with_parameters(core_scale=0.9)``)."""
        return GFlash(replace(self.parameters, **changes), self.detector)

    def longitudinal_parameters(
        self, energy: float, z1: npt.ArrayLike, z2: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Depth of maximum T (X0) and shape alpha of showers of ``energy`` GeV whose two standard
        normals are ``z1``, ``z2`` (what the kernel draws for each shower): arrays of their shape.

        Example:
            >>> t_max, alpha = GFlash().longitudinal_parameters(10.0, [0.0], [0.0])  # published (CMS) values
            >>> round(float(t_max[0]), 3), round(float(alpha[0]), 3)  # ln(ln y - 0.7157), ln(0.7996 + ...)
            (6.341, 4.225)
        """
        from . import _gflash

        vector = self.parameters.vector(self.detector)
        pairs = [_gflash.longitudinal_parameters(vector, float(energy), float(a), float(b)) for a, b in zip(np.ravel(z1), np.ravel(z2), strict=True)]
        values = np.array(pairs, dtype=np.float64).reshape(-1, 2)
        return values[:, 0].reshape(np.shape(z1)), values[:, 1].reshape(np.shape(z1))

    def radial_parameters(self, energy: float, tau: float) -> tuple[float, float, float]:
        """Core radius, tail radius (Moliere radii) and core probability at depth tau = t / T.

        Example:
            >>> [round(v, 4) for v in GFlash().radial_parameters(10.0, 1.0)]
            [0.1226, 0.7045, 0.8782]
        """
        from . import _gflash

        core, tail, probability = _gflash.radial_parameters(self.parameters.vector(self.detector), float(energy), float(tau))
        return float(core), float(tail), float(probability)

    def simulate(
        self,
        energy: npt.ArrayLike,
        eta: npt.ArrayLike = 0.0,
        particle: str | int | npt.ArrayLike = "photon",
        *,
        impact_x: npt.ArrayLike | None = None,
        impact_y: npt.ArrayLike | None = None,
        phi: npt.ArrayLike = 0.0,
        seed: int = 0,
        stream: Sequence[int] = (),
        first_index: int = 0,
        response: bool = True,
        profiles: bool = False,
    ) -> GFlashResult:
        """One shower per entry of ``energy`` (no range policy: :class:`GFlashEngine` applies it).

        Arguments:
            energy: incident energies, GeV, (N,) or a scalar.
            eta, phi: per shower or one value.
            particle: a name, a PDG id or an array of PDG ids (photons, electrons, positrons).
            impact_x, impact_y: where the line of flight crosses the impact plane, mm; drawn
                uniformly in the central cell (from the shower's own stream) unless given.
            seed, stream: the random streams (:func:`stream_seed`); shower i uses the global
                index first_index + i, so a shower depends only on them and its conditions.
            response: apply the detector response (:func:`fastcalo.mc.detector_response`).
            profiles: also score the longitudinal profile.

        Returns:
            A :class:`GFlashResult`; ``showers.images`` (N, 24, 24) float32 GeV.

        Raises:
            ValueError: energies not finite and > 0, non-finite eta, columns of another length,
                or particles other than photons, electrons and positrons.
        """
        from . import _gflash
        from .mc import detector_response, line_of_flight

        energies = np.asarray(energy, dtype=np.float64).reshape(-1)
        n = energies.size
        if not (np.isfinite(energies).all() and (energies > 0).all()):
            msg = f"energies must be finite and > 0 GeV, found {energies[~(np.isfinite(energies) & (energies > 0))][:5].tolist()}"
            raise ValueError(msg)
        if isinstance(particle, (str, int, np.integer)):
            pdgid = np.full(n, pdgid_of(particle), dtype=np.int32)
        else:
            pdgid = _column("particle", as_pdgids(np.asarray(particle).reshape(-1)), n).astype(np.int32)
        unknown = sorted(set(np.unique(pdgid).tolist()) - set(_KIND_OF_PDGID))
        if unknown:
            msg = f"the peer simulates photons, electrons and positrons {sorted(_KIND_OF_PDGID)}, found pdgid(s) {unknown}"
            raise ValueError(msg)
        etas = _column("eta", eta, n)
        if not np.isfinite(etas).all():
            msg = f"eta must be finite, found {etas[~np.isfinite(etas)][:5].tolist()}"
            raise ValueError(msg)
        if first_index < 0:
            msg = f"first_index must be >= 0 (the global index of the first shower), got {first_index}"
            raise ValueError(msg)
        key = np.uint64(stream_seed(check_seed(seed), stream))
        low, high = self.detector.central_cell
        uniforms = _gflash.impact_uniforms(key, np.uint64(first_index), n) if impact_x is None or impact_y is None else np.zeros((n, 2))
        ix = _column("impact_x", impact_x, n) if impact_x is not None else low + (high - low) * uniforms[:, 0]
        iy = _column("impact_y", impact_y, n) if impact_y is not None else low + (high - low) * uniforms[:, 1]
        det = self.detector
        x0 = det.material.radiation_length
        geo = np.array([x0, det.half_width, det.depth, det.cell_size, _LONGITUDINAL_BIN_X0 * x0])
        kinds = np.array([_KIND_OF_PDGID[int(p)] for p in pdgid], dtype=np.int64)
        true_images = np.zeros((n, det.n_cells, det.n_cells))
        longitudinal = np.zeros((n, _LONGITUDINAL_BINS if profiles else 1))
        lost = np.zeros(n)
        _gflash.showers(
            kinds, energies, line_of_flight(etas, ix, iy, det), key, np.uint64(first_index),
            self.parameters.vector(det), geo, true_images, longitudinal, lost,
        )  # fmt: skip
        measured = detector_response(true_images, seed=int(key), first_index=first_index, detector=det) if response else true_images
        showers = ShowerData(
            energy=energies, eta=etas, phi=_column("phi", phi, n), pdgid=pdgid, impact_x=ix, impact_y=iy,
            images=measured.astype(np.float32),
        )  # fmt: skip
        return GFlashResult(showers, true_images, lost, longitudinal if profiles else None)


def _column(name: str, value: npt.ArrayLike, n: int) -> npt.NDArray[np.float64]:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size == 1:
        return np.full(n, array[0])
    if array.size != n:
        msg = f"{name} has {array.size} entries, expected {n} (one per shower) or a single value"
        raise ValueError(msg)
    return array


class GFlashEngine(Engine):
    """The sampling path (:class:`fastcalo.engine.Engine`) with the parametrised peer in place of a
    network: the same batching, seeding by global index, out-of-range policy and output checks.

    Shower i of a call draws from the streams (:func:`stream_seed` (seed, stream), i), so the
    output is bit-identical at any batch size or chunking. It runs on the CPU (numba, on all the
    threads numba is given).

    Arguments:
        peer: the parametrisation (default: the shipped, fitted one).
        seed, batch_size, out_of_range: as for :class:`fastcalo.engine.Engine`.

    Example:
        >>> from fastcalo.engine import Particles
        >>> engine = GFlashEngine(seed=1, out_of_range="clip")
        >>> engine.simulate(Particles.of(energy=[150.0], eta=0.0)).energy.tolist()
        [100.0]
    """

    def __init__(self, peer: GFlash | None = None, *, seed: int = 0, batch_size: int | None = None, out_of_range: str = "error") -> None:
        self._set_options(seed, batch_size, out_of_range)
        self.peer = peer or GFlash.load()
        self.detector = self.peer.detector
        self.pdgids = [PARTICLES[p] for p in self.detector.conditions.particles]
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.batch_size = int(batch_size or 4096)

    def _batch(
        self, particles: Particles, first: int, stream: Sequence[int], images: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The images of particles ``first .. first + n - 1``, written into ``images`` (n, side,
        side), and their impact points."""
        result = self.peer.simulate(
            particles.energy, particles.eta, particles.pdgid, impact_x=particles.impact_x, impact_y=particles.impact_y,
            seed=self.seed, stream=stream, first_index=first,
        )  # fmt: skip
        images[:] = result.showers.images
        return result.showers.impact_x, result.showers.impact_y
