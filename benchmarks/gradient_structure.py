"""Is there structure in the ZO gradient a cheaper estimator could use? For ZsRE edits, the true
gradient g of the target NLL with respect to δ (layer L's MLP output at the subject's last token,
fp32 PyTorch backprop on the same GGUF, δ = 0) is compared with three candidate priors:

  residual  the gradient through the residual stream alone (the final norm and output head at
            the scored rows): cosine with g;
  pca       the top-k principal directions of layer L's MLP outputs over other prompts: the
            share of ‖g‖² they hold (a random k-subspace holds k/hidden);
  shared    the top-k singular directions of other edits' gradients: the same share.

usage: python gradient_structure.py EDITS.json [--count 8] [--others 150] [--layer 6] [--model M.gguf]
"""
import argparse
import sys

import torch
from llama_cpp import Llama as LlamaCpp

from rome_vs_zo import TorchLlama, default_model, requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("edits")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--others", type=int, default=150, help="edits from record 100 on, for the pca and shared subspaces")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--model", default=default_model())
    a = ap.parse_args()
    m = TorchLlama(a.model)
    tok = LlamaCpp(model_path=a.model, vocab_only=True, verbose=False)
    L, down = a.layer, m.w[f"blk.{a.layer}.ffn_down.weight"]

    def enc(t):
        return tok.tokenize(t.encode(), add_bos=False, special=False)

    def gradient(prompt, subject, target):
        """(g, the residual-path gradient): target NLL of the plain prompt, δ at the subject row."""
        tids = enc(prompt + " " + target)[len(enc(prompt)):]
        seq = enc(prompt) + tids[:-1]
        end = prompt.rindex(subject) + len(subject)
        row, start = len(enc(prompt[:end])) - 1, len(enc(prompt)) - 1
        delta = torch.zeros(m.hidden, requires_grad=True)
        final = {}
        rms = m.rms

        def keep(x, g):  # the final residual stream, to read its gradient
            if g is m.w["output_norm.weight"]:
                x.retain_grad()
                final["x"] = x
            return rms(x, g)
        m.rms = keep
        try:
            logits, _ = m.forward(torch.tensor([seq]), [len(seq)], layer=L, delta=delta, at=[row])
        finally:
            m.rms = rms
        nll = -logits.log_softmax(-1)[0, start + torch.arange(len(tids)), torch.tensor(tids)].mean()
        nll.backward()
        return delta.grad.clone(), final["x"].grad[0, start:start + len(tids)].sum(0)

    others = requests(a.edits, 100, a.others)
    with torch.no_grad():
        outs = []
        for p, _, _ in others:
            ids = enc(p)
            _, keys = m.forward(torch.tensor([ids]), [len(ids)], layer=L)
            outs.append(keys[0] @ down.T)
        x = torch.cat(outs)
        pca = torch.linalg.svd(x - x.mean(0), full_matrices=False).Vh
    shared_g = torch.stack([g / g.norm() for g in (gradient(*r)[0] for r in others)])
    shared = torch.linalg.svd(shared_g, full_matrices=False).Vh
    ks = (16, 64, 128)
    print(f"layer {L}, hidden {m.hidden}: a random k-subspace holds k/{m.hidden} of ‖g‖² "
          f"({', '.join(f'k{k} {k / m.hidden:.2f}' for k in ks)}); a random direction's cosine is about ±{m.hidden ** -0.5:.3f}")
    for prompt, subject, target in requests(a.edits, 0, a.count):
        g, res = gradient(prompt, subject, target)
        share = lambda basis, k: float((basis[:k] @ g).norm() ** 2 / g.norm() ** 2)
        cos = float(torch.nn.functional.cosine_similarity(g, res, dim=0))
        print(f"{prompt[:44]!r:48} residual cos {cos:+.3f} | pca " + " ".join(f"k{k} {share(pca, k):.2f}" for k in ks)
              + " | shared " + " ".join(f"k{k} {share(shared, k):.2f}" for k in ks))


if __name__ == "__main__":
    sys.exit(main())
