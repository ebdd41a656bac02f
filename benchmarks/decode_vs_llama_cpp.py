#!/usr/bin/env python3
"""Decode speed of `zorun generate --precision int` next to llama.cpp's on the same GGUF and
machine (llama-cpp-python, greedy, the same thread count). Medians over runs; each zorun run is a
fresh process whose first generation builds the graphs and is not timed (--stats).

    python=$(benchmarks/python-env.sh)      # a venv with llama-cpp-python
    $python benchmarks/decode_vs_llama_cpp.py [--runs 5] [-n 64] [--threads 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from llama_cpp import Llama


def default_model():
    if os.environ.get("ZO_MODEL"):
        return os.environ["ZO_MODEL"]
    cache = os.environ.get("ZO_CACHE", os.path.expanduser("~/.cache/zo"))
    return os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")


def zorun_once(a):
    env = dict(os.environ, ZO_THREADS=str(a.threads))
    p = subprocess.run([a.zorun, "generate", "--model", a.model, "--precision", "int", "--stats", "--prompt", a.prompt, "-n", str(a.n)],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"zorun failed ({p.returncode}): {p.stderr.strip()}")
    stats = json.loads(p.stderr.strip().splitlines()[-1])
    return stats["decode_tokens_per_s"], stats["prefill_s"], int(stats["tokens"])


def llama_once(llm, a):
    tokens = llm.tokenize(a.prompt.encode(), add_bos=False)
    llm.reset()
    stamps = []
    t0 = time.perf_counter()
    for tok in llm.generate(tokens, top_k=1, temp=0.0, reset=True):
        stamps.append(time.perf_counter())
        if tok == llm.token_eos() or len(stamps) >= a.n:
            break
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), stamps[0] - t0, len(stamps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--zorun", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "zorun"))
    ap.add_argument("--prompt", default="The history of the city begins in the early medieval period, when")
    ap.add_argument("-n", type=int, default=64, help="tokens to generate")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    llm = Llama(a.model, n_threads=a.threads, n_ctx=512, verbose=False)
    llama_once(llm, a)  # warm-up
    zo, ll = [], []
    for i in range(a.runs):  # alternating, so drifts in machine load hit both
        zo.append(zorun_once(a))
        ll.append(llama_once(llm, a))
        print(f"run {i + 1}/{a.runs}: zo {zo[-1][0]:.1f} tokens/s ({zo[-1][2]} tokens), llama.cpp {ll[-1][0]:.1f} tokens/s ({ll[-1][2]} tokens)",
              file=sys.stderr)
    med = lambda xs, k: statistics.median(x[k] for x in xs)
    print(f"decode, {os.path.basename(a.model)}, {a.threads} threads, medians of {a.runs} runs:")
    print(f"  zorun generate --precision int: {med(zo, 0):8.1f} tokens/s   prefill {med(zo, 1) * 1000:7.1f} ms")
    print(f"  llama.cpp (llama-cpp-python):   {med(ll, 0):8.1f} tokens/s   prefill {med(ll, 1) * 1000:7.1f} ms")
    print(f"  zo / llama.cpp: {med(zo, 0) / med(ll, 0):.2f}x")


if __name__ == "__main__":
    main()
