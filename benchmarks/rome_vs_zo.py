"""Edit speed: zo (zoc compile + zorun run, ZO on the int path) next to backprop ROME in PyTorch
(fp32, our own implementation) on the same model, the same edits and this machine.

usage: python rome_vs_zo.py EDITS.json [--from 0] [--count 10] [--layer 6] [--model MODEL.gguf]
                            [--zo-bin .build/release] [--skip-zo] [--report R.json]

ROME here: the key is the down-projection's input at the subject's last token averaged over
ROME's 21 context templates ("{}" and 10 + 10 prefixes of 5 and 10 tokens the model samples
after "The", "Therefore", "Because", "I", "You"); the value δ is found by Adam (lr 0.5, at most
25 steps, ROME's stop at NLL < 0.05) on the target NLL over the 21 prompts + 0.0625·KL at
"{subject} is a" + 1e-3·‖δ‖/‖v‖², ‖δ‖ ≤ 4‖v‖; the update is r-ROME's with the averaged key in u
and r (the same update zorun applies). Times are per edit, after the model is loaded and the
templates are made (ROME caches them across edits; zo's plan holds its prefixes). Each record
gets its own plan (compiled first), and the edits alternate: ROME on record i, then zorun run on
its plan, so both meet the same spell of a noisy machine. Prints per edit and as medians: seconds,
steps and evaluations, peak RSS of zorun, the ratio, and ROME's rewrite accuracy after each edit.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from llama_cpp import Llama as LlamaCpp


def default_model():
    if os.environ.get("ZO_MODEL"):
        return os.environ["ZO_MODEL"]
    cache = os.environ.get("ZO_CACHE", os.path.expanduser("~/.cache/zo"))
    return os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")


class TorchLlama:
    """A Llama-architecture forward in fp32 from a GGUF (weights dequantized once)."""

    def __init__(self, path):
        r = GGUFReader(path)

        def meta(key):
            f = r.fields[key]
            return f.parts[f.data[0]][0] if len(f.data) == 1 else None

        arch = bytes(r.fields["general.architecture"].parts[r.fields["general.architecture"].data[0]]).decode()
        self.layers = int(meta(f"{arch}.block_count"))
        self.heads = int(meta(f"{arch}.attention.head_count"))
        self.kv_heads = int(meta(f"{arch}.attention.head_count_kv"))
        self.eps = float(meta(f"{arch}.attention.layer_norm_rms_epsilon"))
        theta = float(meta(f"{arch}.rope.freq_base"))
        self.w = {}
        for t in r.tensors:
            a = dequantize(t.data, t.tensor_type).astype(np.float32)
            self.w[t.name] = torch.from_numpy(a.reshape([int(x) for x in reversed(t.shape)]).copy())
        self.hidden = self.w["token_embd.weight"].shape[1]
        self.head_dim = self.hidden // self.heads
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])
        half = self.head_dim // 2
        self.inv_freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / self.head_dim)

    def rms(self, x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * g

    def rope(self, x):
        # GGUF llama q/k are laid out for rotation of adjacent pairs (x[2i], x[2i+1]).
        T = x.shape[2]
        ang = torch.arange(T, dtype=torch.float64)[:, None] * self.inv_freq[None, :]
        cos, sin = ang.cos().float(), ang.sin().float()
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    def block(self, l, x):
        """Block l on the residual stream x [B, T, D] (causal): (x after attention, the MLP's
        down-projection input [B, T, F], its output [B, T, D]); the block's output is x + output."""
        B, T, _ = x.shape
        p = f"blk.{l}."
        h = self.rms(x, self.w[p + "attn_norm.weight"])
        q = (h @ self.w[p + "attn_q.weight"].T).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = (h @ self.w[p + "attn_k.weight"].T).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = (h @ self.w[p + "attn_v.weight"].T).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.rope(q), self.rope(k)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        causal = torch.full((T, T), float("-inf")).triu(1)
        s = q @ k.transpose(-1, -2) / self.head_dim ** 0.5 + causal
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, self.hidden)
        x = x + o @ self.w[p + "attn_output.weight"].T
        h = self.rms(x, self.w[p + "ffn_norm.weight"])
        a = torch.nn.functional.silu(h @ self.w[p + "ffn_gate.weight"].T) * (h @ self.w[p + "ffn_up.weight"].T)
        return x, a, a @ self.w[p + "ffn_down.weight"].T

    def head(self, x):
        return self.rms(x, self.w["output_norm.weight"]) @ self.out.T

    def forward(self, ids, lengths, layer=None, delta=None, at=None):
        """ids [B, T] right-padded; returns logits [B, T, V] and layer `layer`'s down-projection
        inputs [B, T, F]; δ is added to that layer's MLP output at row at[b] of sequence b."""
        B, T = ids.shape
        x = self.w["token_embd.weight"][ids]
        keys = None
        for l in range(self.layers):
            x, a, m = self.block(l, x)
            if l == layer:
                keys = a
                if delta is not None:
                    add = torch.zeros_like(m)
                    add[torch.arange(B), torch.tensor(at)] = delta
                    m = m + add
            x = x + m
        return self.head(x), keys


class Rome:
    def __init__(self, model, tok, layer, seed=0):
        self.m, self.tok, self.layer = model, tok, layer
        torch.manual_seed(seed)
        self.templates = ["{}"] + [t.replace("{", " ").replace("}", " ") + ". {}"
                                   for n_tokens in (5, 10) for t in self.sample(n_tokens, 2)]

    def encode(self, text):
        return self.tok.tokenize(text.encode(), add_bos=False, special=False)

    @torch.no_grad()
    def sample(self, n_tokens, per_start):
        out = []
        for start in ["The", "Therefore", "Because", "I", "You"]:
            for _ in range(per_start):
                ids = self.encode(start)
                for _ in range(n_tokens):
                    logits, _ = self.m.forward(torch.tensor([ids]), [len(ids)])
                    top = logits[0, -1].topk(5)
                    ids.append(int(top.indices[torch.multinomial(top.values.softmax(-1), 1)]))
                out.append(self.tok.detokenize(ids).decode(errors="replace"))
        return out

    def batch(self, seqs):
        T = max(len(s) for s in seqs)
        return torch.tensor([s + [0] * (T - len(s)) for s in seqs]), [len(s) for s in seqs]

    def subject_row(self, text, subject):
        end = text.rindex(subject) + len(subject)
        return len(self.encode(text[:end])) - 1

    def edit(self, prompt, subject, target, steps=25, lr=0.5, kl_factor=0.0625, wd=1e-3, clamp=4.0):
        """One edit of the model's weights in place; returns (rewrite accuracy after, steps taken)."""
        L, W = self.layer, self.m.w[f"blk.{self.layer}.ffn_down.weight"]
        target_ids = self.encode(prompt + " " + target)[len(self.encode(prompt)):] or self.encode(" " + target)
        # Key: averaged over the templates.
        texts = [t.format(prompt) for t in self.templates]
        ids, lens = self.batch([self.encode(t) for t in texts])
        rows = [self.subject_row(t, subject) for t in texts]
        with torch.no_grad():
            _, keys = self.m.forward(ids, lens, layer=L)
        key = torch.stack([keys[b, r] for b, r in enumerate(rows)]).mean(0)
        # Value: δ on the rewrite prompts + the KL prompt.
        seqs = [self.encode(t) + target_ids[:-1] for t in texts]
        kl_text = f"{subject} is a"
        seqs.append(self.encode(kl_text))
        rows.append(self.subject_row(kl_text, subject))
        ids, lens = self.batch(seqs)
        starts = [len(self.encode(t)) - 1 for t in texts]
        v_norm = (W @ key).norm()
        delta = torch.zeros(self.m.hidden, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        kl_init = None
        taken = 0
        for taken in range(1, steps + 1):
            opt.zero_grad()
            logits, _ = self.m.forward(ids, lens, layer=L, delta=delta, at=rows)
            lp = logits.log_softmax(-1)
            nll = torch.stack([-lp[b, starts[b] + torch.arange(len(target_ids)), torch.tensor(target_ids)].mean()
                               for b in range(len(texts))]).mean()
            kl_lp = lp[-1, lens[-1] - 1]
            if kl_init is None:
                kl_init = kl_lp.detach()
            kl = (kl_lp.exp() * (kl_lp - kl_init)).sum()
            loss = nll + kl_factor * kl + wd * delta.norm() / v_norm ** 2
            if nll.item() < 5e-2:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                if delta.norm() > clamp * v_norm:
                    delta.mul_(clamp * v_norm / delta.norm())
        # r-ROME: W' k̄ = W k̄ + δ.
        with torch.no_grad():
            u = key / key.norm()
            W += torch.outer(delta.detach() / (key @ u), u)
        return self.rewrite(prompt, target_ids), taken

    @torch.no_grad()
    def rewrite(self, prompt, target_ids):
        p = self.encode(prompt)
        logits, _ = self.m.forward(torch.tensor([p + target_ids[:-1]]), [len(p) + len(target_ids) - 1])
        pred = logits[0, len(p) - 1:].argmax(-1).tolist()
        return sum(int(a == b) for a, b in zip(pred, target_ids)) / len(target_ids)


def requests(path, first, count):
    with open(path) as f:
        recs = json.load(f)
    recs = recs if isinstance(recs, list) else [recs]
    out = []
    for r in recs[first:first + count]:
        if "prompt" in r:
            out.append((r["prompt"], r["subject"], r["target_new"].strip()))
        else:
            out.append((r["src"], r["subject"], r["alt"].strip()))
    return out


def compile_zo(a, workdir, record):
    """zoc compile of one record's plan; returns its path."""
    plan = os.path.join(workdir, f"plan-{record}.zo")
    subprocess.run([os.path.join(a.zo_bin, "zoc"), "compile", "--model", a.model, "--edits", a.edits,
                    "--from", str(record), "--count", "1", "--layer", str(a.layer), "-o", plan],
                   check=True, stdout=subprocess.DEVNULL)
    return plan


def run_zo(a, plan, workdir):
    """zorun run of one plan: its report row and the process's peak RSS in MiB."""
    report, rss = os.path.join(workdir, "zo-report.json"), os.path.join(workdir, "rss")
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss, os.path.join(a.zo_bin, "zorun"), "run", plan,
                    "--model", a.model, "--report", report], check=True, stdout=subprocess.DEVNULL)
    with open(report) as f:
        row = json.load(f)[0]
    with open(rss) as f:
        return row, int(f.read().split()[-1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("edits")
    ap.add_argument("--from", dest="first", type=int, default=0)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--zo-bin", default=".build/release")
    ap.add_argument("--skip-zo", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--report")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    reqs = requests(a.edits, a.first, a.count)

    tok = LlamaCpp(model_path=a.model, vocab_only=True, verbose=False)
    model = TorchLlama(a.model)
    rome = Rome(model, tok, a.layer)
    original = model.w[f"blk.{a.layer}.ffn_down.weight"].clone()
    workdir = tempfile.TemporaryDirectory()
    plans, compile_s = [], 0.0
    if not a.skip_zo:
        t = time.time()
        plans = [compile_zo(a, workdir.name, a.first + i) for i in range(len(reqs))]
        compile_s = time.time() - t
    # Alternating: edit i by ROME, then by zo, so both see the same spell of the machine's noise.
    rome_rows, zo_rows, rss = [], [], 0.0
    for i, (prompt, subject, target) in enumerate(reqs):
        t = time.time()
        acc, steps = rome.edit(prompt, subject, target)
        s = time.time() - t
        model.w[f"blk.{a.layer}.ffn_down.weight"].copy_(original)  # single editing
        rome_rows.append({"record": a.first + i, "seconds": s, "steps": steps, "rewrite": acc * 100})
        print(f"rome [{a.first + i}] {prompt!r} -> {target!r}: {s:.1f} s, {steps} steps, rewrite {acc * 100:.0f}", flush=True)
        if plans:
            r, m = run_zo(a, plans[i], workdir.name)
            r["record"] = a.first + i  # the plan holds one record: its report counts from 0
            zo_rows.append(r)
            rss = max(rss, m)
            print(f"zo   [{int(r['record'])}]: {r['seconds']:.1f} s, {int(r['steps'])} steps, {int(r['evaluations'])} evaluations, "
                  f"stopped early {r['stopped_early']}, min p(target) after the update {r['min_target_probability_after_update']:.3f}, "
                  f"peak RSS {m:.0f} MiB", flush=True)
    workdir.cleanup()
    rome_med = statistics.median(r["seconds"] for r in rome_rows)
    print(f"PyTorch backprop ROME (fp32, {a.threads} threads): median {rome_med:.1f} s per edit over {len(rome_rows)} edits, "
          f"rewrite {statistics.mean(r['rewrite'] for r in rome_rows):.1f}")
    result = {"rome": rome_rows, "rome_median_seconds": rome_med}
    if zo_rows:
        zo_med = statistics.median(r["seconds"] for r in zo_rows)
        evals = sorted(int(r["evaluations"]) for r in zo_rows)
        print(f"zo (int8/int16 interpreter, zorun run): median {zo_med:.1f} s per edit; step-graph evaluations per edit: "
              f"median {statistics.median(evals):.0f}, p90 {evals[min(len(evals) - 1, int(0.9 * len(evals)))]}; "
              f"{sum(bool(r['stopped_early']) for r in zo_rows)} of {len(zo_rows)} stopped early; zoc compile {compile_s:.1f} s for "
              f"{len(zo_rows)} edits; zorun run peak RSS {rss:.0f} MiB")
        print(f"ratio zo / PyTorch ROME (median s per edit): {zo_med / rome_med:.2f}x")
        result.update({"zo": zo_rows, "zo_median_seconds": zo_med, "zo_compile_seconds": compile_s,
                       "zo_peak_rss_mib": rss, "ratio": zo_med / rome_med})
    if a.report:
        with open(a.report, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
