#!/usr/bin/python3
"""Reference draws for data/mt19937.go (run with /usr/bin/python3, numpy).

Writes data/testdata/ipiqa-rng.json: numpy legacy RandomState streams
(seeded state, raw uint32, permutation, 64-bit bounded ints) and CPython
random streams (random(), getrandbits(32)) for a few seeds and sizes.
Usage: cd data && /usr/bin/python3 testdata/gen/ipiqa_rng.py
"""
import json
import random
import sys

import numpy as np

out = {"numpy_version": np.__version__, "python_version": sys.version.split()[0],
       "numpy": [], "python": []}
for seed in [0, 1, 42, 12345, 2**32 - 1]:
    rs = np.random.RandomState(seed)
    state_head = [int(v) for v in rs.get_state()[1][:8]]
    raw = [int(v) for v in rs.randint(0, 2**32, size=6, dtype=np.uint32)]
    perms = {}
    for n in [1, 2, 3, 10, 300, 1000]:
        perms[str(n)] = [int(v) for v in rs.permutation(n)]
    big = [int(v) for v in rs.randint(0, 2**40 + 1, size=5, dtype=np.uint64)]
    out["numpy"].append({"seed": seed, "state_head": state_head, "uint32": raw,
                         "permutations_in_order": [1, 2, 3, 10, 300, 1000],
                         "permutations": perms, "bounded_2pow40": big})
for seed in [0, 1, 42, 2**32 - 1, 2**40 + 7]:
    random.seed(seed)
    rnd = [repr(random.random()) for _ in range(8)]
    bits = [random.getrandbits(32) for _ in range(4)]
    out["python"].append({"seed": seed, "random": rnd, "getrandbits32": bits})
with open("testdata/ipiqa-rng.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
