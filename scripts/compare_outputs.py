"""Do two checkouts of fastcalo make the same showers? Bit for bit, through the user's entry points.

Each checkout runs in its own process (its own ``fastcalo`` on ``sys.path``) and hashes what
``Simulator.sample``, ``Simulator.run`` (jagged events, streams, offsets) and ``Simulator.run_file``
(ROOT and HDF5 output) give with the shipped default model, on the CPU; the script prints the
hashes side by side and exits 1 if any differs. For refactors that promise no visible change.

    git worktree add /tmp/old <commit>
    python scripts/compare_outputs.py --old /tmp/old --new .
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_PROBE = r"""
import hashlib, json, sys, tempfile, pathlib
import numpy as np
sys.path.insert(0, sys.argv[1])
import awkward as ak
import fastcalo
from fastcalo import datasets, particles
assert fastcalo.__file__.startswith(sys.argv[1]), fastcalo.__file__

def digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]

out = {}
rng = np.random.default_rng(0)
n = 5000
conditions = dict(energy=np.exp(rng.uniform(0.0, np.log(100.0), n)), eta=rng.uniform(-1.5, 1.5, n),
                  particle=rng.choice([22, 11, -11], n))
for dtype in ("float32", "bfloat16"):
    sim = fastcalo.Simulator(seed=3, device="cpu", dtype=dtype)
    count = n if dtype == "float32" else 600
    out[f"sample {dtype}"] = digest(sim.sample(**{k: v[:count] for k, v in conditions.items()}, first_index=777))
sim = fastcalo.Simulator(seed=5, device="cpu", batch_size=1500)
events = ak.Array([[{"energy": float(e), "eta": 0.3, "phi": 0.0, "pdgid": 22} for e in row] for row in
                   np.split(np.geomspace(1, 100, 3000), [5, 5, 900, 2000])])
out["run"] = digest(ak.to_numpy(ak.flatten(sim.run(events))))
out["run stream"] = digest(ak.to_numpy(ak.flatten(sim.run(events, stream=("f.root", 10)))))
with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    particles.write_example(tmp / "events.root", n_events=3000, seed=2)
    for suffix in ("root", "h5"):
        target = tmp / f"showers.{suffix}"
        sim.run_file(tmp / "events.root", target, collection="Photon", step_size=700, progress=False)
        data = datasets.read(target)
        out[f"run_file {suffix}"] = digest(data.images) + " " + digest(np.stack([data.impact_x, data.impact_y]))
print(json.dumps(out))
"""


def probe(checkout: str) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, str(Path(checkout).resolve())], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{checkout}: the probe failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="checkout of the old version (its repository root)")
    parser.add_argument("--new", default=".", help="checkout of the new version")
    args = parser.parse_args()
    old, new = probe(args.old), probe(args.new)
    same = True
    for key in old:
        equal = old[key] == new.get(key)
        same &= equal
        print(f"{key:18s} {old[key]:36s} {new.get(key, '-'):36s} {'same' if equal else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
