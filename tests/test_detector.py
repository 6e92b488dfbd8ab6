from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastcalo.detector import DEFAULT_DETECTOR, Detector, Response, particle_name, pdgid_of


def test_default_detector_values() -> None:
    det = DEFAULT_DETECTOR
    assert det.material.radiation_length == pytest.approx(8.903)
    assert det.material.moliere_radius == pytest.approx(19.59)
    assert det.material.critical_energy == pytest.approx(9.64e-3)
    assert det.n_total_cells == 576
    assert det.depth == pytest.approx(25 * 8.903)
    assert det.cell_edges[0] == -120.0 and det.cell_edges[-1] == 120.0
    assert det.central_cell == (0.0, 10.0)
    assert det.conditions.energy == (1.0, 100.0)


def test_detector_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_DETECTOR.n_cells = 12  # type: ignore[misc]


def test_effective_z_between_components() -> None:
    assert 74 < DEFAULT_DETECTOR.material.effective_z < 82


def test_electron_density_of_pbwo4() -> None:
    # 188 electrons per 455.04 g/mol at 8.28 g/cm3: 2.06e24 per cm3
    assert DEFAULT_DETECTOR.material.electron_density == pytest.approx(2.06e21, rel=0.01)


def test_incidence_angle() -> None:
    assert Detector.incidence_angle(0.0) == 0.0
    assert np.tan(Detector.incidence_angle(1.0)) == pytest.approx(np.sinh(1.0))


@pytest.mark.parametrize(("name", "pid"), [("photon", 22), ("electron", 11), ("positron", -11)])
def test_particles(name: str, pid: int) -> None:
    assert pdgid_of(name) == pid
    assert pdgid_of(pid) == pid
    assert particle_name(pid) == name


def test_unknown_particle_message() -> None:
    with pytest.raises(ValueError, match="unknown particle 'muon': expected one of 'photon' \\(22\\)"):
        pdgid_of("muon")
    with pytest.raises(ValueError, match="unknown pdgid 13"):
        particle_name(13)


def test_bad_geometry_and_response() -> None:
    with pytest.raises(ValueError, match="n_cells > 0"):
        Detector(n_cells=0)
    with pytest.raises(ValueError, match="Response.noise must be finite and >= 0"):
        Response(noise=float("nan"))


def test_pdgids_are_integer_values_in_int32_range() -> None:
    import numpy as np

    from fastcalo.detector import as_pdgids

    assert pdgid_of(11.0) == 11 and pdgid_of(np.float32(-11.0)) == -11
    for bad in (11.2, 22.7, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"a PDG id must be an integer \(e.g. 22 or 22.0\)"):
            pdgid_of(bad)
    with pytest.raises(ValueError, match="unknown particle True"):
        pdgid_of(True)
    assert as_pdgids([22, 11.0, -11]).tolist() == [22, 11, -11] and as_pdgids([22]).dtype == np.int32
    with pytest.raises(ValueError, match=r"non-integer value\(s\), the first 22.7 at index 1"):
        as_pdgids([22.0, 22.7])
    with pytest.raises(ValueError, match=r"int32 range \[-2147483648, 2147483647\]: 1 outside, the first 4294967318 at index 0"):
        as_pdgids(np.array([2**32 + 22], dtype=np.int64))
    with pytest.raises(ValueError, match="PDG ids must be integer numbers"):
        as_pdgids(["22"])
