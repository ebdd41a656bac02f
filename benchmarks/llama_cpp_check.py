"""Loads edited GGUFs written by `zorun edit --out-dir DIR` with llama.cpp (llama-cpp-python) and
checks, per edit, that the first target token is the top-1 prediction after the edit prompt.

usage: python llama_cpp_check.py EDITS.json DIR [--base MODEL.gguf]
DIR holds record-N.gguf files; N indexes EDITS.json (KnowEdit/EasyEdit or ZsRE-MEND shape).
With --base, the unedited model is checked the same way for comparison.
"""
import argparse
import json
import os
import re
import sys

import numpy as np
from llama_cpp import Llama


def prompt_and_target(rec):
    if "prompt" in rec:
        return rec["prompt"], rec["target_new"]
    return rec["src"], rec["alt"]


def first_target_is_top1(llm, prompt, target):
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    full = llm.tokenize((prompt + " " + target.strip()).encode(), add_bos=False, special=False)
    want = full[len(ids)] if full[: len(ids)] == ids and len(full) > len(ids) else \
        llm.tokenize((" " + target.strip()).encode(), add_bos=False, special=False)[0]
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[len(ids) - 1])
    return int(np.argmax(logits)) == want


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("edits")
    ap.add_argument("dir")
    ap.add_argument("--base")
    a = ap.parse_args()
    with open(a.edits) as f:
        records = json.load(f)
    if isinstance(records, dict):
        records = [records]
    files = sorted((int(m.group(1)), n) for n in os.listdir(a.dir) if (m := re.fullmatch(r"record-(\d+)\.gguf", n)))
    if not files:
        sys.exit(f"{a.dir}: no record-N.gguf files")
    base = Llama(model_path=a.base, logits_all=True, n_ctx=256, verbose=False) if a.base else None
    hits = base_hits = 0
    for i, name in files:
        prompt, target = prompt_and_target(records[i])
        llm = Llama(model_path=os.path.join(a.dir, name), logits_all=True, n_ctx=256, verbose=False)
        ok = first_target_is_top1(llm, prompt, target)
        del llm
        hits += ok
        line = f"[{i}] {prompt!r} -> {target!r}: edited {'top-1' if ok else 'not top-1'}"
        if base:
            b = first_target_is_top1(base, prompt, target)
            base_hits += b
            line += f", unedited {'top-1' if b else 'not top-1'}"
        print(line)
    print(f"llama.cpp: first target token top-1 on {hits}/{len(files)} edited models"
          + (f" (unedited model: {base_hits}/{len(files)})" if base else ""))


if __name__ == "__main__":
    main()
