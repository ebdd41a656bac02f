"""ZO estimators side by side in fp32 PyTorch, fast enough to try an idea before building it into
zorun: per ZsRE edit, the evaluations until every target token has p > 0.5 on the plain prompt
and ‖δ‖/‖v_init‖ there, for

  gaussian  zorun's estimator: two-sided, q Gaussian directions, Adam, the norm clamp;
  guided    the same with --guided-directions of the q drawn in the span of the last
            --guided-rank Adam momenta (snapshots every --guided-every steps), the others in
            its complement, each part's estimate unbiased (guided evolution strategies);
  forward   one-sided: q directions and the unperturbed δ (q + 1 evaluations per step,
            against 2q), g = mean over i of (L(δ + εz_i) − L(δ)) / ε · z_i — unbiased to second
            order too (E[(zᵀHz) z] = 0 for Gaussian z), at the cost of the curvature's variance;
  exact     normalised gradient descent on the true gradient (backprop), steps of
            --exact-step·‖v_init‖/10: how large a δ the edit needs when no noise is added.

δ is added at the subject's last row of layer L's MLP output, the layers up to L run once; the
loss is the target tokens' mean NLL (no KL, no context prefixes: the estimators' relative cost is
what this measures). The stop test at δ is not counted as an evaluation.

usage: python zo_estimators.py EDITS.json [--first 0] [--count 4] [--methods gaussian,forward,exact] [flags]
"""
import argparse
import math
import statistics
import sys

import torch
from llama_cpp import Llama as LlamaCpp

from rome_vs_zo import TorchLlama, default_model, requests


class Edit:
    """One edit's plain prompt, run up to layer L once; logp(δs) runs the rest per δ."""

    def __init__(self, m, enc, layer, prompt, subject, target):
        self.m, self.layer = m, layer
        self.targets = enc(prompt + " " + target)[len(enc(prompt)):]
        seq = enc(prompt) + self.targets[:-1]
        end = prompt.rindex(subject) + len(subject)
        self.row, self.start = len(enc(prompt[:end])) - 1, len(enc(prompt)) - 1
        x = m.w["token_embd.weight"][torch.tensor([seq])]
        with torch.no_grad():
            for l in range(layer + 1):
                x, _, out = m.block(l, x)
                if l == layer:
                    self.v_init = out[0, self.row].clone()
                x = x + out
        self.x = x
        self.v_norm = float(self.v_init.norm())

    def logp(self, deltas):
        """Target-token log-probabilities [B, targets] with δ_b (deltas [B, D]) at the subject row."""
        x = self.x.repeat(deltas.shape[0], 1, 1)
        x[:, self.row] = x[:, self.row] + deltas
        for l in range(self.layer + 1, self.m.layers):
            x, _, out = self.m.block(l, x)
            x = x + out
        rows = self.start + torch.arange(len(self.targets))
        lp = self.m.head(x[:, rows]).log_softmax(-1)
        return lp[:, torch.arange(len(self.targets)), torch.tensor(self.targets)]


class Adam:
    def __init__(self, d, lr):
        self.lr, self.m, self.v, self.t = lr, torch.zeros(d), torch.zeros(d), 0

    def step(self, x, g):
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        return x - self.lr * (self.m / (1 - 0.9 ** self.t)) / ((self.v / (1 - 0.999 ** self.t)).sqrt() + 1e-8)


def stopped(e, delta):
    with torch.no_grad():
        return bool(e.logp(delta[None])[0].exp().min() > 0.5)


def zo(e, a, guided, forward=False):
    """(evaluations, ‖δ‖/‖v_init‖, stopped) of the Gaussian, guided or forward estimator."""
    d, q = e.m.hidden, a.directions
    per_step = q + 1 if forward else 2 * q
    eps = a.perturbation * e.v_norm / math.sqrt(d)
    gen = torch.Generator().manual_seed(a.seed)
    opt, delta, momenta = Adam(d, a.lr), torch.zeros(d), []
    for t in range(a.max_steps):
        if stopped(e, delta):
            return per_step * t, float(delta.norm()) / e.v_norm, True
        z = torch.randn(q, d, generator=gen)
        basis = torch.linalg.qr(torch.stack(momenta[-a.guided_rank:]).T)[0] if guided and momenta else None
        qg = a.guided_directions if basis is not None else 0
        if basis is not None:
            k = basis.shape[1]
            z[:qg] = torch.randn(qg, k, generator=gen) @ basis.T * math.sqrt(d / k)
            z[qg:] -= (z[qg:] @ basis) @ basis.T
        with torch.no_grad():
            if forward:
                nll = -e.logp(torch.cat([delta[None], delta + eps * z])).mean(1)
            else:
                nll = -e.logp(torch.cat([delta + eps * z, delta - eps * z])).mean(1)
        slope = (nll[1:] - nll[0]) / eps if forward else (nll[:q] - nll[q:]) / (2 * eps)
        if basis is None:
            g = (slope[:, None] * z).sum(0) / q
        else:
            k = basis.shape[1]
            g = (slope[:qg, None] * z[:qg]).sum(0) * (k / d) / qg + (slope[qg:, None] * z[qg:]).sum(0) / (q - qg) * (d / (d - k))
        delta = opt.step(delta, g)
        limit = a.clamp * e.v_norm
        if delta.norm() > limit:
            delta = delta * limit / delta.norm()
        if guided and (t + 1) % a.guided_every == 0:
            momenta.append(opt.m.clone())
    return per_step * a.max_steps, float(delta.norm()) / e.v_norm, stopped(e, delta)


def exact(e, a):
    """(steps, ‖δ‖/‖v_init‖, stopped) of normalised gradient descent on the true gradient."""
    delta = torch.zeros(e.m.hidden)
    for t in range(a.max_steps):
        if stopped(e, delta):
            return t, float(delta.norm()) / e.v_norm, True
        x = delta.clone().requires_grad_(True)
        (-e.logp(x[None]).mean()).backward()
        delta = delta - a.exact_step * e.v_norm / 10 * x.grad / x.grad.norm()
    return a.max_steps, float(delta.norm()) / e.v_norm, stopped(e, delta)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("edits")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--methods", default="gaussian,exact")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--directions", type=int, default=4, help="q (zorun's default)")
    ap.add_argument("--perturbation", type=float, default=0.3, help="‖εz‖ relative to ‖v_init‖ (zorun's default)")
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--clamp", type=float, default=4.0)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guided-rank", type=int, default=4)
    ap.add_argument("--guided-directions", type=int, default=2)
    ap.add_argument("--guided-every", type=int, default=5)
    ap.add_argument("--exact-step", type=float, default=1.0)
    ap.add_argument("--model", default=default_model())
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = TorchLlama(a.model)
    tok = LlamaCpp(model_path=a.model, vocab_only=True, verbose=False)
    enc = lambda t: tok.tokenize(t.encode(), add_bos=False, special=False)
    edits = [Edit(m, enc, a.layer, *r) for r in requests(a.edits, a.first, a.count)]
    for method in a.methods.split(","):
        if method not in ("gaussian", "guided", "forward", "exact"):
            sys.exit(f"unknown method {method!r}: gaussian, guided, forward or exact")
        rows = [exact(e, a) if method == "exact" else zo(e, a, method == "guided", method == "forward") for e in edits]
        unit = "steps" if method == "exact" else "evaluations"
        print(f"{method:9} {unit} {[r[0] for r in rows]} (median {statistics.median(r[0] for r in rows):.0f}), "
              f"‖δ‖/‖v_init‖ {[round(r[1], 2) for r in rows]}, stopped {sum(r[2] for r in rows)} of {len(rows)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
