"""EMT on OC20's 86 adsorbates: the share whose adsorbate falls apart in the EMT reference
relaxation (3 systems per adsorbate on Cu / Pt / Ag slabs, dissociation not rejected).

    pip download fairchem-data-oc --no-deps -d WHEELS
    OMP_NUM_THREADS=1 python benchmarks/is2rs_oc20_adsorbates_emt.py \
        WHEELS/fairchem_data_oc-1.0.2-py2.py3-none-any.whl
"""

import json
import sys
import time

from _record import record

from ltau_md.workflows.is2rs.adsorbates import oc20_adsorbates
from ltau_md.workflows.is2rs.generate import GeneratorConfig, adsorbate_fragments, generate_system

table = oc20_adsorbates(sys.argv[1])
res = {}
t = time.time()
for j, name in enumerate(sorted(table)):
    cfg = GeneratorConfig(metals=("Cu", "Pt", "Ag"), ood_pairs=(), ood_facets=(),
                          extra_adsorbates=table, id_adsorbates=(name,), ood_adsorbates=(),
                          reject_dissociated=False)
    out = []
    for i in range(3):
        try:
            ini, rel, _ = generate_system(0, "val_id", 1000 * j + i, cfg)
            out.append(adsorbate_fragments(rel) > adsorbate_fragments(ini))
        except Exception:
            out.append(None)
    res[name] = out
flat = [x for v in res.values() for x in v if x is not None]
summary = {"n_adsorbates": len(table), "n_relaxations": len(flat),
                  "dissociated_share": round(sum(flat) / len(flat), 3),
                  "adsorbates_never_intact": sum(all(x for x in v if x is not None)
                                                 for v in res.values()),
                  "multi_atom": sum(len(table[n][0]) > 1 for n in table),
                  "no_converged_bound": sum(x is None for v in res.values() for x in v),
                  "seconds": round(time.time() - t)}
print(json.dumps(summary))
record(__file__, summary)
