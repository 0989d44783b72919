"""Compares the output of pgvector's own regression tests, run against ruvector, with
pgvector's expected output. Two differences are allowed and nothing else:

- HINT lines: ruvector adds a hint to most errors (pgvector's have none);
- the value `SHOW hnsw.iterative_scan` gives: ruvector's default is relaxed_order, pgvector's
  off (documented in docs/sql-reference.md).

    compare.py EXPECTED_DIR RESULTS_DIR TEST...

Prints a unified diff of what else differs and exits 1 when anything does.
"""

import difflib
import pathlib
import sys


def normalized(lines):
    out = []
    for i, line in enumerate(lines):
        if line.startswith("HINT:  "):
            continue
        # SHOW hnsw.iterative_scan;  /  hnsw.iterative_scan  /  ----  /  <value>
        if i >= 3 and lines[i - 3] == "SHOW hnsw.iterative_scan;" and line == " relaxed_order":
            line = " off"
        out.append(line)
    return out


def main():
    expected_dir, results_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    failed = False
    for test in sys.argv[3:]:
        want = (expected_dir / f"{test}.out").read_text().splitlines()
        got = (results_dir / f"{test}.out").read_text().splitlines()
        diff = list(difflib.unified_diff(normalized(want), normalized(got),
                                         f"expected/{test}.out", f"results/{test}.out", lineterm=""))
        if diff:
            failed = True
            print("\n".join(diff))
        print(f"{test}: {'differs' if diff else 'as pgvector, apart from hints and the iterative_scan default'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
