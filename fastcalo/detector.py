"""The calorimeter: material, readout geometry, detector response and condition ranges.

This module is the one place for the detector's numbers and for units. Energies are in GeV,
lengths in mm, as in NanoAOD and Geant4. Nothing else in fastcalo hard-codes these values:
code takes a :class:`Detector` (``DEFAULT_DETECTOR`` unless told otherwise).

References:
    PDG, Review of Particle Physics, "Atomic and nuclear properties of materials" (lead
    tungstate, PbWO4): X0 = 0.8903 cm, R_M = 1.959 cm, E_c(e-) = 9.64 MeV, rho = 8.28 g/cm3.
    https://pdg.lbl.gov/2024/AtomicNuclearProperties/HTML/lead_tungstate.html
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = (
    "ELECTRON_MASS",
    "PARTICLES",
    "PDGID_RANGE",
    "ConditionRanges",
    "DEFAULT_DETECTOR",
    "Detector",
    "Material",
    "Response",
    "as_pdgids",
    "pdgid_of",
    "particle_name",
)

#: Electron mass in GeV (PDG).
ELECTRON_MASS = 0.51099895e-3

#: Particle names accepted everywhere, with their PDG Monte Carlo ids.
PARTICLES: dict[str, int] = {"photon": 22, "electron": 11, "positron": -11}


def pdgid_of(particle: str | int | float | np.integer[Any] | np.floating[Any]) -> int:
    """The PDG id of a particle given by name ("photon") or id (22, or 22.0).

    Arguments:
        particle: a name of :data:`PARTICLES` (any case) or one of their PDG ids; an id may be a
            float with an integer value (22.0), never a fraction (22.7 is an error, not 22).

    Returns:
        The PDG id.

    Raises:
        ValueError listing the known particles, for any other name or id.

    Example:
        >>> pdgid_of("positron"), pdgid_of("Photon"), pdgid_of(11), pdgid_of(22.0)
        (-11, 22, 11, 22)
    """
    if isinstance(particle, (int, float, np.integer, np.floating)) and not isinstance(particle, (bool, np.bool_)):
        if not (math.isfinite(particle) and float(particle).is_integer()):
            msg = f"a PDG id must be an integer (e.g. 22 or 22.0), got {particle!r}"
            raise ValueError(msg)
        if int(particle) in PARTICLES.values():
            return int(particle)
    if isinstance(particle, str) and particle.lower() in PARTICLES:
        return PARTICLES[particle.lower()]
    known = ", ".join(f"{k!r} ({v})" for k, v in PARTICLES.items())
    msg = f"unknown particle {particle!r}: expected one of {known}"
    raise ValueError(msg)


#: The range of a PDG id (int32, as in NanoAOD and HepMC).
PDGID_RANGE = (-(2**31), 2**31 - 1)


def as_pdgids(values: ArrayLike) -> NDArray[np.int32]:
    """PDG ids as int32, checked before the cast: integer values (22.0 is 22, 22.7 is an error,
    never truncated) within the int32 range (2**32 + 22 is an error, never wrapped to 22).

    Arguments:
        values: a scalar or an array of numbers.

    Returns:
        int32 array of the same shape.

    Raises:
        ValueError naming the count and the first bad value (and its position), for non-numbers,
        non-integer values or values outside the int32 range.

    Example:
        >>> as_pdgids([22, 11.0, -11]).tolist()
        [22, 11, -11]
        >>> as_pdgids([22, 22.7])
        Traceback (most recent call last):
        ...
        ValueError: PDG ids must be integers (e.g. 22 or 22.0): 1 non-integer value(s), the first 22.7 at index 1
    """
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        wide = array
    elif array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.floor(np.where(np.isfinite(array), array, 0.0)))
        if bad.any():
            first = np.argwhere(bad)[0]
            where = f" at index {', '.join(str(int(i)) for i in first)}" if array.ndim else ""
            msg = f"PDG ids must be integers (e.g. 22 or 22.0): {int(bad.sum())} non-integer value(s), the first {array[tuple(first)].item()!r}{where}"
            raise ValueError(msg)
        wide = array
    else:
        msg = f"PDG ids must be integer numbers, got {array.dtype} values ({array.reshape(-1)[:3].tolist()}...)"
        raise ValueError(msg)
    low, high = PDGID_RANGE
    outside = (wide < low) | (wide > high)
    if outside.any():
        first = np.argwhere(outside)[0]
        where = f" at index {', '.join(str(int(i)) for i in first)}" if array.ndim else ""
        msg = f"PDG ids must lie in the int32 range [{low}, {high}]: {int(outside.sum())} outside, the first {array[tuple(first)].item()!r}{where}"
        raise ValueError(msg)
    return wide.astype(np.int32)


def particle_name(pdgid: int | np.integer[Any]) -> str:
    """The name of a PDG id that fastcalo simulates (22 -> "photon").

    Raises:
        ValueError listing the known ids, for any other id.

    Example:
        >>> particle_name(-11)
        'positron'
    """
    for name, value in PARTICLES.items():
        if value == int(pdgid):
            return name
    msg = f"unknown pdgid {pdgid}: expected one of {sorted(PARTICLES.values())}"
    raise ValueError(msg)


@dataclass(frozen=True)
class Material:
    """A homogeneous absorber. Lengths in mm, energies in GeV.

    ``composition`` lists (Z, atoms per molecule); ``effective_z`` is the Z^2-weighted mean Z
    used by the bremsstrahlung and pair-production screening functions.
    """

    name: str = "PbWO4"
    radiation_length: float = 8.903  # mm
    moliere_radius: float = 19.59  # mm
    critical_energy: float = 9.64e-3  # GeV, e- (Rossi definition, as tabulated by the PDG)
    density: float = 8.28  # g/cm3
    composition: tuple[tuple[int, int], ...] = ((82, 1), (74, 1), (8, 4))
    molar_mass: float = 455.04  # g/mol (207.2 + 183.84 + 4 * 15.999)
    #: Photo-absorption mass coefficient as a power law (reference energy GeV, cm2/g, power):
    #: 0.066 cm2/g at 0.5 MeV, from the NIST XCOM totals for Pb (0.161) and W (0.138 cm2/g) minus
    #: Klein-Nishina and coherent scattering, weighted by mass fraction; falling as k^-2.4 between
    #: 0.3 and 1 MeV (https://physics.nist.gov/PhysRefData/XrayMassCoef/).
    photoelectric: tuple[float, float, float] = (0.5e-3, 0.066, 2.4)

    @property
    def effective_z(self) -> float:
        """Z^2-weighted mean atomic number (the weight of each element in brems and pairs)."""
        num = sum(n * z**3 for z, n in self.composition)
        den = sum(n * z**2 for z, n in self.composition)
        return num / den

    @property
    def electron_density(self) -> float:
        """Electrons per mm^3 (for Compton scattering)."""
        avogadro = 6.02214076e23
        electrons = sum(n * z for z, n in self.composition)
        return self.density * avogadro * electrons / self.molar_mass * 1e-3  # cm^-3 -> mm^-3

    def photoelectric_attenuation(self, energy: ArrayLike) -> NDArray[np.float64]:
        """Photo-absorption coefficient in mm^-1 at photon energy ``energy`` (GeV), same shape.

        Example:
            >>> round(float(Material().photoelectric_attenuation(0.5e-3)), 4)  # 0.066 cm2/g x 8.28 g/cm3
            0.0546
        """
        e_ref, mass_coefficient, power = self.photoelectric
        return mass_coefficient * self.density * 0.1 * (e_ref / np.asarray(energy, dtype=np.float64)) ** power


@dataclass(frozen=True)
class Response:
    """The readout response applied after transport, cell by cell.

    - photo-statistics: the number of photo-electrons is Poisson with mean
      ``photoelectrons_per_gev * E`` (an effective yield: light yield x collection x 1/excess noise);
    - electronic noise: Gaussian, ``noise`` GeV per cell, in every cell;
    - zero suppression: cells measuring below ``threshold`` GeV read zero.
    """

    photoelectrons_per_gev: float = 2000.0
    noise: float = 0.002  # GeV per cell
    threshold: float = 0.005  # GeV, 2.5 sigma of the noise

    def __post_init__(self) -> None:
        for name in ("photoelectrons_per_gev", "noise", "threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                msg = f"Response.{name} must be finite and >= 0, got {value!r}"
                raise ValueError(msg)


@dataclass(frozen=True)
class ConditionRanges:
    """Where the detector (and a model trained on it) is defined."""

    energy: tuple[float, float] = (1.0, 100.0)  # GeV, incident kinetic energy
    eta: tuple[float, float] = (-1.5, 1.5)
    particles: tuple[str, ...] = ("photon", "electron", "positron")


@dataclass(frozen=True)
class Detector:
    """A block of homogeneous calorimeter read out in ``n_cells x n_cells`` towers summed over depth.

    Coordinates: z along the face normal (0 at the front face), x along the beam (eta) direction,
    y along phi. The readout grid spans [-n/2, n/2] cells around the origin; the particle's line
    of flight crosses the plane at depth ``impact_depth`` inside the central cell
    (index ``n_cells // 2`` in x and y, i.e. x, y in [0, cell_size)). A barrel calorimeter with a
    flat face: a particle at pseudorapidity eta arrives at angle alpha to the normal with
    tan(alpha) = sinh(eta), in the x-z plane.

    Example:
        >>> det = Detector()
        >>> det.n_cells, det.cell_size, round(det.depth, 1)
        (24, 10.0, 222.6)
    """

    material: Material = field(default_factory=Material)
    n_cells: int = 24
    cell_size: float = 10.0  # mm
    depth_x0: float = 25.0
    impact_depth_x0: float = 5.0
    response: Response = field(default_factory=Response)
    conditions: ConditionRanges = field(default_factory=ConditionRanges)

    def __post_init__(self) -> None:
        if self.n_cells <= 0 or self.cell_size <= 0 or self.depth_x0 <= 0:
            msg = (
                "Detector needs n_cells > 0, cell_size > 0 and depth_x0 > 0, got "
                f"{self.n_cells}, {self.cell_size}, {self.depth_x0}"
            )
            raise ValueError(msg)

    @property
    def depth(self) -> float:
        """Depth of the block in mm."""
        return self.depth_x0 * self.material.radiation_length

    @property
    def half_width(self) -> float:
        """Half the lateral size of the block in mm (the block is as wide as its readout)."""
        return 0.5 * self.n_cells * self.cell_size

    @property
    def n_total_cells(self) -> int:
        """Cells in one image (576 for the default)."""
        return self.n_cells * self.n_cells

    @property
    def cell_edges(self) -> NDArray[np.float64]:
        """Cell edges in mm, the same in x and y: shape (n_cells + 1,)."""
        return np.linspace(-self.half_width, self.half_width, self.n_cells + 1)

    @property
    def central_cell(self) -> tuple[float, float]:
        """Lower and upper edge (mm) of the central cell in x and in y."""
        low = self.cell_edges[self.n_cells // 2]
        return float(low), float(low + self.cell_size)

    @staticmethod
    def incidence_angle(eta: ArrayLike) -> NDArray[np.float64]:
        """Angle (rad) between the particle and the face normal: tan(alpha) = sinh(eta), same shape as ``eta``.

        Example:
            >>> Detector.incidence_angle([0.0, 0.5]).round(4).tolist()
            [0.0, 0.4804]
        """
        return np.arctan(np.sinh(np.asarray(eta, dtype=np.float64)))

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description (stored in shower files and model files)."""
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> Detector:
        """Inverse of :meth:`to_dict` (lists become tuples, as after a JSON round trip).

        Raises:
            ValueError naming the unknown field(s) and the expected ones.

        Example:
            >>> Detector.from_dict(Detector().to_dict()) == Detector()
            True
        """
        parts: dict[str, type[Material | Response | ConditionRanges]] = {
            "material": Material,
            "response": Response,
            "conditions": ConditionRanges,
        }
        arguments = _arguments(cls, values)
        for key, value in arguments.items():
            part = parts.get(key)
            if part is not None:
                arguments[key] = part(**_arguments(part, value))
        return cls(**arguments)


def _arguments(
    kind: type[Detector | Material | Response | ConditionRanges], data: Mapping[str, object]
) -> dict[str, Any]:
    """Keyword arguments for the dataclass ``kind`` from a decoded JSON object (lists -> tuples).

    The values are typed ``Any``: they come from JSON and meet their types in ``kind``'s constructor.
    """
    names = sorted(f.name for f in fields(kind))
    unknown = sorted(set(data) - set(names))
    if unknown:
        msg = f"unknown {kind.__name__} field(s) {unknown}; expected {names}"
        raise ValueError(msg)
    return {
        key: tuple(tuple(v) if isinstance(v, list) else v for v in value) if isinstance(value, list) else value
        for key, value in data.items()
    }


DEFAULT_DETECTOR = Detector()
