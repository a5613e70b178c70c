#!/usr/bin/env python3
"""Writes the golden answers the drift tests compare against.

River gives ADWIN's and Page-Hinkley's detection positions, scipy the
Kolmogorov-Smirnov p-values. The streams come from splitmix64 (below, and
splitmix in drift_test.go) using only comparisons and exactly rounded
additions, so Go rebuilds them bit for bit and the JSON holds no stream.

    python3 -m venv .cache/venv-drift
    .cache/venv-drift/bin/pip install 'river==0.26.*' scipy
    .cache/venv-drift/bin/python models/drift/testdata/gen.py
"""

import json
import math
import os

import numpy as np
import river
import scipy
from river import drift
from scipy import special, stats
from scipy.stats._stats_py import _attempt_exact_2kssamp

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = (1 << 64) - 1


class SplitMix:
    def __init__(self, seed):
        self.s = seed & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def float(self):
        return (self.next() >> 11) * 2.0**-53


def stream(spec):
    """Segments of spec["segment"] values; per segment a level: a Bernoulli
    rate (kind "bernoulli") or a mean plus uniform noise in [-0.5, 0.5)
    (kind "uniform")."""
    rng = SplitMix(spec["seed"])
    out = []
    for level in spec["levels"]:
        for _ in range(spec["segment"]):
            u = rng.float()
            if spec["kind"] == "bernoulli":
                out.append(1.0 if u < level else 0.0)
            else:
                out.append(level + (u - 0.5))
    return out


def positions(det, xs):
    hits = []
    for i, x in enumerate(xs):
        det.update(x)
        if det.drift_detected:
            hits.append(i)
    return hits


def write(name, obj):
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")


# Error rates: 21 segments, 20 abrupt changes up and down.
RATES = [0.1, 0.4, 0.1, 0.3, 0.05, 0.5, 0.2, 0.6, 0.1, 0.35, 0.15,
         0.45, 0.05, 0.25, 0.1, 0.5, 0.3, 0.7, 0.2, 0.4, 0.1]


def adwin_cases():
    cases = []
    for name, seed, delta, clock in [
        ("rates delta 0.002", 1, 0.002, 32),
        ("rates delta 0.002 seed 2", 2, 0.002, 32),
        ("rates delta 0.05", 3, 0.05, 32),
        ("rates clock 1", 4, 0.002, 1),
    ]:
        spec = {"kind": "bernoulli", "seed": seed, "segment": 2000, "levels": RATES}
        det = drift.ADWIN(delta=delta, clock=clock, max_buckets=5, min_window_length=5, grace_period=10)
        cases.append({"name": name, "stream": spec, "delta": delta, "clock": clock,
                      "max_buckets": 5, "min_window_length": 5, "grace_period": 10,
                      "detections": positions(det, stream(spec))})
    spec = {"kind": "uniform", "seed": 5, "segment": 1000, "levels": [0, 1, 0.5, 3, 2.5, 0]}
    det = drift.ADWIN(delta=0.002)
    cases.append({"name": "means", "stream": spec, "delta": 0.002, "clock": 32,
                  "max_buckets": 5, "min_window_length": 5, "grace_period": 10,
                  "detections": positions(det, stream(spec))})
    return cases


def page_hinkley_cases():
    cases = []
    for name, spec, params in [
        ("means up and down", {"kind": "uniform", "seed": 11, "segment": 1000, "levels": [0, 1, 0, 2, 0.5, 3]},
         {"min_instances": 30, "delta": 0.005, "threshold": 50, "alpha": 1 - 0.0001}),
        ("small steps", {"kind": "uniform", "seed": 12, "segment": 2000, "levels": [0, 0.2, 0.4, 0.1, 0.6]},
         {"min_instances": 30, "delta": 0.005, "threshold": 50, "alpha": 1 - 0.0001}),
        ("error rates", {"kind": "bernoulli", "seed": 13, "segment": 2000, "levels": RATES},
         {"min_instances": 30, "delta": 0.005, "threshold": 50, "alpha": 1 - 0.0001}),
    ]:
        # Outpost's Page-Hinkley watches for an increase only.
        det = drift.PageHinkley(mode="up", **params)
        cases.append({"name": name, "stream": spec, **params, "detections": positions(det, stream(spec))})
    return cases


def ks_cases():
    rng = np.random.default_rng(7)
    r = lambda n, loc=0.0: [round(float(v), 3) for v in rng.normal(loc, 1, n)]
    samples = [
        ("identical", [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
        ("identical with ties", [1, 1, 2], [1, 1, 2]),
        ("overlapping", [1, 2, 3, 4, 5], [3, 4, 5, 6, 7]),
        ("disjoint", [1, 2, 3], [4, 5, 6]),
        ("one each", [0], [1]),
        ("unequal sizes", [0.1, 0.5, 0.9, 1.3, 2.2], [0.3, 0.4, 1.0, 1.1, 1.8, 2.5, 3.1]),
        ("normal 20/20", r(20), r(20)),
        ("normal 30/40 shifted", r(30), r(40, 0.8)),
        ("normal 100/150", r(100), r(150)),
        ("normal 200/300 shifted", r(200), r(300, 0.3)),
    ]
    cases = []
    for name, a, b in samples:
        # method="auto" is exact for these sizes.
        res = stats.ks_2samp(a, b, method="auto")
        cases.append({"name": name, "a": a, "b": b, "d": float(res.statistic), "p": float(res.pvalue)})
    # Sizes too large to list samples for: p-values for a D on the lattice,
    # from the exact method ks_2samp uses up to 10,000 per sample, and above
    # that from its asymptotic one (kstwo.sf at n·m/(n+m)).
    exact = []
    for n, m, h in [(50, 50, 10), (60, 90, 45), (60, 90, 1), (500, 700, 400), (1000, 1000, 60),
                    (1000, 1000, 150), (3000, 2000, 300), (10000, 10000, 300), (10000, 7, 20000)]:
        # D = h/lcm(n, m): the lattice's steps.
        lcm = n // math.gcd(n, m) * m
        d = h / lcm
        g = math.gcd(n, m)
        ok, _, p = _attempt_exact_2kssamp(n, m, g, d, "two-sided")
        assert ok, (n, m, h)
        exact.append({"n": n, "m": m, "d": d, "p": float(p)})
    asymptotic = []
    for n, m, shift in [(20000, 30000, 0), (20000, 30000, 0.03), (50000, 50000, 0.01), (100000, 20000, 0.02)]:
        res = stats.ks_2samp(rng.normal(0, 1, n), rng.normal(shift, 1, m), method="auto")
        asymptotic.append({"n": n, "m": m, "d": float(res.statistic), "p": float(res.pvalue)})
    # The Kolmogorov distribution's tail, on both sides of λ ≈ 1.18.
    tail = [{"lambda": lam, "sf": float(special.kolmogorov(lam))}
            for lam in [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.1, 1.18, 1.2, 1.5, 2.0, 3.0, 5.0]]
    return {"cases": cases, "lattice": exact, "asymptotic": asymptotic, "kolmogorov": tail}


def main():
    versions = {"river": river.__version__, "scipy": scipy.__version__}
    write("adwin.json", {**versions, "cases": adwin_cases()})
    write("pagehinkley.json", {**versions, "cases": page_hinkley_cases()})
    write("ks.json", {**versions, **ks_cases()})


if __name__ == "__main__":
    main()
