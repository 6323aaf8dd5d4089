"""How real is an IS2RS reference? EMT and universal potentials against real DFT-PBE minima.

Protocol
--------
The Xu & Kitchin (2014) DFT-relaxed structures (fairchem docs data: give the folder holding
``structures.json`` and ``energies.json``; :mod:`ltau_md.workflows.is2rs.xu_kitchin`), the
systems EMT can treat (metals Pt, Ag, Au, Pd, Cu; adsorbates C, H, O, N) at ``--coverage``
(0.25 ML by default: 80 systems) and the clean slabs. Per reference calculator:

1. relax every structure from its DFT minimum (``--optimizer`` BFGS, fmax 0.05 eV/A, at most
   ``--steps`` steps; fixed atoms as the data's bottom two layers), one thread;
2. adsorption energy per adsorbate atom (E(slab + adsorbate) - E(clean slab)) / n, the
   per-adsorbate offset to DFT removed (gas references differ): MAE against DFT and Spearman
   (over all systems as computed, after the offsets, and within each adsorbate, averaged),
   95 % bootstrap intervals over systems;
3. the adsorbate's displacement from its DFT position (max over its atoms, A): systems
   leaving the DFT minimum by > 0.5 A, hollow sites (fcc, hcp) apart;
4. cost: process CPU seconds per force call and per relaxation.

Usage::

    python benchmarks/is2rs_reference_dft.py --data XK --out OUT --reference emt
    python benchmarks/is2rs_reference_dft.py --data XK --out OUT --reference sevennet0
    python benchmarks/is2rs_reference_dft.py --data XK --out OUT --reference chgnet
    python benchmarks/is2rs_reference_dft.py --data XK --out OUT --summarise
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _record import record

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REFERENCES = {"emt": "ase.calculators.emt:EMT",
              "sevennet0": "ltau_md.workflows.is2rs.universal:sevennet0",
              "chgnet": "ltau_md.workflows.is2rs.universal:chgnet"}
EMT_METALS = ("Pt", "Ag", "Au", "Pd", "Cu")
EMT_ADSORBATES = ("C", "H", "O", "N")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with structures.json, energies.json")
    p.add_argument("--out", required=True)
    p.add_argument("--reference", choices=sorted(REFERENCES))
    p.add_argument("--coverage", default="0.25")
    p.add_argument("--optimizer", default="BFGS")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--limit", type=int, default=None, help="first N systems only (a trial)")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--summarise", action="store_true")
    return p.parse_args(argv)


def relax_all(args) -> dict:
    import torch
    from ase import optimize

    from ltau_md.workflows.is2rs.reference import load_reference
    from ltau_md.workflows.is2rs.xu_kitchin import read_xu_kitchin

    torch.set_num_threads(1)
    systems = read_xu_kitchin(args.data, coverages=("0.0", args.coverage), metals=EMT_METALS,
                              adsorbates=EMT_ADSORBATES)
    if args.limit:
        clean = [a for a in systems if a.info["adsorbate"] is None]
        systems = clean + [a for a in systems if a.info["adsorbate"] is not None][:args.limit]
    t0 = time.process_time()
    calc = load_reference(REFERENCES[args.reference])
    load_cpu = time.process_time() - t0
    rows = []
    for a in systems:
        dft = a.positions.copy()
        work = a.copy()
        calc.reset()
        work.calc = calc
        calls = [0]

        def count(calls=calls):
            calls[0] += 1

        opt = getattr(optimize, args.optimizer)(work, logfile=None)
        opt.attach(count, interval=1)
        t = time.process_time()
        converged = bool(opt.run(fmax=0.05, steps=args.steps))
        cpu = time.process_time() - t
        ads = work.get_tags() == 2
        from ase.geometry import find_mic

        d, _ = find_mic(work.positions - dft, work.cell, work.pbc)
        dist = np.linalg.norm(d, axis=1)
        rows.append({"sid": a.info["sid"], "metal": a.info["metal"],
                     "adsorbate": a.info["adsorbate"], "site": a.info["site"],
                     "n_adsorbate": a.info["n_adsorbate"],
                     "dft_adsorption_energy": a.info["dft_adsorption_energy"],
                     "energy": float(work.get_potential_energy()), "converged": converged,
                     "steps": int(opt.nsteps), "force_calls": calls[0], "cpu_s": cpu,
                     "adsorbate_displacement": float(dist[ads].max()) if ads.any() else None,
                     "free_mean_distance": float(dist[work.get_tags() > 0].mean())})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {"reference": REFERENCES[args.reference], "load_cpu_s": load_cpu, "rows": rows}


def _spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def score(res: dict, n_boot: int) -> dict:
    rows = res["rows"]
    clean = {r["metal"]: r["energy"] for r in rows if r["adsorbate"] is None}
    ads = [r for r in rows if r["adsorbate"] is not None and np.isfinite(
        r["dft_adsorption_energy"])]
    e_model = np.array([(r["energy"] - clean[r["metal"]]) / r["n_adsorbate"] for r in ads])
    e_dft = np.array([r["dft_adsorption_energy"] for r in ads])
    kind = np.array([r["adsorbate"] for r in ads])

    def metrics(idx: np.ndarray) -> tuple[float, float, float, float]:
        m, d, k = e_model[idx], e_dft[idx], kind[idx]
        shifted = m.copy()
        for a in np.unique(k):  # the per-adsorbate offset to DFT, removed
            shifted[k == a] -= np.mean(m[k == a] - d[k == a])
        within = [_spearman(m[k == a], d[k == a]) for a in np.unique(k) if (k == a).sum() > 2]
        return (float(np.mean(np.abs(shifted - d))), _spearman(shifted, d),
                float(np.nanmean(within)), _spearman(m, d))

    point = metrics(np.arange(len(ads)))
    rng = np.random.default_rng(0)
    draws = np.array([metrics(rng.integers(0, len(ads), len(ads))) for _ in range(n_boot)])
    lo, hi = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    disp = np.array([r["adsorbate_displacement"] for r in ads])
    hollow = np.array([r["site"] in ("fcc", "hcp") for r in ads])
    calls = sum(r["force_calls"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    return {
        "reference": res["reference"], "n_systems": len(ads),
        "adsorption_energy_mae_offset_removed": [point[0], lo[0], hi[0]],
        "adsorption_energy_spearman_offset_removed": [point[1], lo[1], hi[1]],
        "adsorption_energy_spearman_within_adsorbate": [point[2], lo[2], hi[2]],
        "adsorption_energy_spearman_raw": [point[3], lo[3], hi[3]],
        "leaving_dft_minimum_gt_0p5A": int((disp > 0.5).sum()),
        "hollow_leaving_dft_minimum_gt_0p5A": [int((disp[hollow] > 0.5).sum()),
                                               int(hollow.sum())],
        "displacement_median_A": float(np.median(disp)),
        "displacement_max_A": float(disp.max()),
        "not_converged": int(sum(not r["converged"] for r in rows)),
        "cpu_s_per_force_call": cpu / max(calls, 1),
        "cpu_s_per_relaxation_mean": cpu / len(rows),
        "cpu_s_total": cpu, "load_cpu_s": res["load_cpu_s"],
        "per_adsorbate_offset_eV": {a: float(np.mean(e_model[kind == a] - e_dft[kind == a]))
                                    for a in np.unique(kind)}}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        files = sorted(out.glob("reference_*.json"))
        if not files:
            raise SystemExit(f"no reference_*.json in {out}: run the references first")
        line = {"benchmark": "is2rs_reference_dft", "coverage": args.coverage,
                "optimizer": args.optimizer, "max_steps": args.steps,
                "references": {f.stem.removeprefix("reference_"):
                               score(json.loads(f.read_text()), args.n_boot) for f in files}}
        print(json.dumps(line))
        record(__file__, line)
        return 0
    if args.reference is None:
        raise SystemExit("give --reference or --summarise")
    from ltau_md.core.files import write_json_atomic

    res = relax_all(args)
    write_json_atomic(out / f"reference_{args.reference}.json", res)
    print(json.dumps(score(res, 200)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
