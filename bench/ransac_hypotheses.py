"""RANSAC hypotheses: how many 3-point fits the tracker draws per registration.

A 3-point SVD fit of stereo points (noisy in depth, sharp across) is rarely close enough to gate
the other inliers under their Mahalanobis test, so the consensus keeps growing with the number
of hypotheses well past what an outlier ratio alone would ask for. Synthetic stereo matches
(``stereo_instance``: 50 matches, 35 % of them moved by ~1 m; the gate's covariance is both ends'
sum, taken as twice the target's), one registration at a time as the tracker does, certified
refit included. Peer: 128 hypotheses (the model's setting until stop 25),
measured in the same run. Prints the mean consensus, the inliers among it and the median time
per registration for 128, 512 and 2048. Last line: ``ransac_consensus_ratio: <512 / 128>``.
"""
from __future__ import annotations

import statistics
import time

import torch


def main() -> int:
    from sdpr_loc.geometry.instances import stereo_instance
    from sdpr_loc.geometry.registration import ransac

    torch.set_num_threads(1)
    items, N = 40, 50
    inst = stereo_instance(items, N, 0.5, 11, (0.0, 0.0, 0.0))
    g = torch.Generator().manual_seed(1)
    out = torch.rand(items, N, generator=g) < 0.35
    trg = torch.where(out[..., None], inst.trg + torch.randn(items, N, 3, generator=g, dtype=torch.float64), inst.trg)
    W = inst.inv_cov / 2        # (S_trg + S_src)^-1 with S_src ~ S_trg
    consensus = {}
    for K in (128, 512, 2048):
        sizes, right, ms = [], [], []
        gen = torch.Generator().manual_seed(0)
        for b in range(items):
            sl = slice(b, b + 1)
            t0 = time.perf_counter()
            _, inl = ransac(inst.src[sl], trg[sl], inst.weights[sl], W[sl], threshold=11.34,
                            iterations=K, generator=gen)
            ms.append(1e3 * (time.perf_counter() - t0))
            sizes.append(int(inl.sum()))
            right.append(int((inl & ~out[sl]).sum()))
        consensus[K] = statistics.mean(sizes)
        print(f"{K:5d} hypotheses: consensus {consensus[K]:5.1f} (inliers {statistics.mean(right):5.1f} of "
              f"{float((~out).sum(1).double().mean()):.1f}), {statistics.median(ms):5.2f} ms per registration")
    print(f"ransac_consensus_ratio: {consensus[512] / consensus[128]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
