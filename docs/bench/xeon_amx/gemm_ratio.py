"""The default model's linear-layer GEMMs (forward, grad input, grad weight), each timed alone on
random operands, fp32 against bf16: how much faster bf16 makes the step's matrix multiplies here.

Run from the repository root: python docs/bench/xeon_amx/gemm_ratio.py
"""

import time

import torch

ROWS = 8 * 300  # batch x latent frames of creative-bench's default step
# (in, out) features of the default model's linear layers: stage 1 (256 wide), stage 2 (384 wide).
LAYERS = [
    (256, 768),
    (256, 256),
    (256, 2048),
    (2048, 256),
    (384, 1152),
    (384, 384),
    (384, 2048),
    (2048, 384),
]


def seconds_per_call(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.set_num_threads(2)
    totals = {}
    for dtype in (torch.float32, torch.bfloat16):
        total = 0.0
        for in_features, out_features in LAYERS:
            x = torch.randn(ROWS, in_features, dtype=dtype)
            weight = torch.randn(out_features, in_features, dtype=dtype)
            grad = torch.randn(ROWS, out_features, dtype=dtype)
            times = (
                seconds_per_call(lambda: torch.nn.functional.linear(x, weight)),
                seconds_per_call(lambda: grad @ weight),
                seconds_per_call(lambda: grad.t() @ x),
            )
            total += sum(times)
            flop = 2 * ROWS * in_features * out_features
            print(
                f"{str(dtype):15s} {ROWS}x{in_features}->{out_features}: "
                + ", ".join(
                    f"{name} {t * 1e3:.2f} ms ({flop / t / 1e9:.0f} GFLOP/s)"
                    for name, t in zip(("forward", "grad input", "grad weight"), times)
                )
            )
        totals[dtype] = total
    fp32, bf16 = totals[torch.float32], totals[torch.bfloat16]
    print(
        f"all layers, forward and backward: fp32 {fp32 * 1e3:.1f} ms, bf16 {bf16 * 1e3:.1f} ms, "
        f"bf16 {fp32 / bf16:.2f}x faster"
    )


if __name__ == "__main__":
    main()
