"""Writes docs/benchmarks.md from the benchmarks' latest results (see scripts/bench-report).

argv: the repository root, and the parts as "name|command" lines. Each part left
target/bench/<stem>.md (and .json, .png) and target/bench/parts/<name>.json (command, commit,
start, duration). Sections appear in the parts' order; a part never run is listed as such.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(sys.argv[1])
PARTS = [line.split("|", 1) for line in sys.argv[2].splitlines() if line]
BENCH = ROOT / "target" / "bench"
DOCS = ROOT / "docs"
IMAGES = DOCS / "benchmarks"

# part -> (output stem, section title)
SECTIONS = {
    "kernels": ("kernels", "Distance kernels"),
    "hnsw": ("ruhnsw", "ruhnsw vs pgvector HNSW, 100,000 × 384"),
    "hnsw-1m": ("ruhnsw-1m", "The largest table: 1,000,000 × 128"),
    "hnsw-half": ("ruhnsw-half", "Half-precision index pages, 50,000 × 768"),
    "hnsw-halfvec": ("ruhnsw-halfvec", "The halfvec type, 50,000 × 768"),
    "hnsw-halfvec-3072": ("ruhnsw-halfvec-3072", "The halfvec type, 20,000 × 3,072"),
    "corpus-hnsw": ("corpus-hnsw", "Real corpus: one table"),
    "tenants": ("tenants", "Tenant-confined search: 1,000 tenants in one index"),
    "tenants-10k": ("tenants-10k", "Tenant-confined search: 10,000 tenants in one index"),
    "corpus-tenants": ("corpus-tenants", "Real corpus: its owners as tenants"),
    "levels": ("levels", "Isolation levels, migration under load, 100+ dedicated tenants"),
    "tenancy": ("tenancy", "Tenant context layer, admission control and rate limits, 10,000 tenants"),
    "noisy": ("noisy", "Noisy neighbours at default settings"),
}


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    cpu = "unknown"
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    flags = open("/proc/cpuinfo").read()
    simd = [f for f in ("avx2", "fma", "f16c", "avx512f") if re.search(rf"\b{f}\b", flags)]
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) / 2**20
    os_name = "unknown"
    if Path("/etc/os-release").exists():
        m = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text())
        os_name = m.group(1) if m else os_name
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    pgvector = re.search(r'PGVECTOR_VERSION="([^"]+)"', lib).group(1)
    pg18 = ROOT / "target/tools/pg18/pgserver/pginstall/bin/pg_config"
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores ({', '.join(simd).upper()})"),
        ("memory", f"{mem:.0f} GiB"),
        ("system", f"{os_name}, Linux {platform.release()}"),
        ("PostgreSQL", f"{sh('/usr/lib/postgresql/15/bin/pg_config', '--version')} (Debian), "
                       f"{sh(str(pg18), '--version')} (with pgvector {pgvector})"),
        ("Rust", sh("rustc", "--version")),
    ]


def load(stem):
    path = BENCH / f"{stem}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def summary():
    """Headline figures from the parts' JSON, each next to its goal."""
    rows = []
    for stem, label in [("ruhnsw", "100,000 × 384"), ("ruhnsw-1m", "1,000,000 × 128"),
                        ("corpus-hnsw", "real corpus"), ("ruhnsw-halfvec", "50,000 × 768 halfvec"),
                        ("ruhnsw-halfvec-3072", "20,000 × 3,072 halfvec")]:
        r = load(stem)
        if not r or "equal_recall" not in r:
            continue
        for target in (0.95, 0.99):
            at = {p["engine"]: p for p in r["equal_recall"] if abs(p["recall"] - target) < 1e-9}
            pg = at.get("pgvector hnsw")
            for engine, p in at.items():
                if engine != "pgvector hnsw" and pg:
                    rows.append((f"QPS at recall {target}, 1 session, {label}", "≥ 1.2x pgvector",
                                 f"{p['qps'] / pg['qps']:.2f}x ({p['qps']:.0f} vs {pg['qps']:.0f})"))
                elif engine != "pgvector hnsw":
                    rows.append((f"QPS at recall {target}, 1 session, {label}", "≥ 1.2x pgvector",
                                 f"{p['qps']:.0f}; pgvector does not reach it"))
        for c in r.get("concurrent", []):
            if c["engine"] == "pgvector hnsw" or c["clients"] == 1:
                continue
            pg = [x for x in r["concurrent"] if x["engine"] == "pgvector hnsw"
                  and x["clients"] == c["clients"] and x["target"] == c["target"]]
            if pg:
                rows.append((f"QPS at recall {c['target']}, {c['clients']} sessions, {label}",
                             "≥ 1.2x pgvector", f"{c['qps'] / pg[0]['qps']:.2f}x"))
        builds = {(b["engine"], b["workers"]): b for b in r["builds"]}
        same = []
        for (engine, workers), b in sorted(builds.items(), key=lambda kv: kv[0][1]):
            pg = builds.get(("pgvector hnsw", workers))
            if engine == "ruvector ruhnsw" and pg:
                same.append(f"{workers} workers {b['seconds']:.1f} s vs {pg['seconds']:.1f} s "
                            f"({b['seconds'] / pg['seconds']:.2f}x)")
        if same:
            rows.append((f"index build, {label}", "as fast as pgvector with the same workers",
                         "; ".join(same)))
    for stem, label in [("tenants", "1,000 synthetic tenants"), ("tenants-10k", "10,000 synthetic tenants"),
                        ("corpus-tenants", "real corpus")]:
        r = load(stem)
        if not r:
            continue
        bands = {}
        for b in r["bands"]:
            bands.setdefault(b["band"], {})[b["target"]] = b
        for band, by in bands.items():
            s, o = by.get("ruhnsw shared index"), by.get("ruhnsw own table")
            if s and o:
                rows.append((f"shared index vs own table, p50, tenants of {band}, {label}",
                             "< 5% (spec)", f"{100 * (s['p50_ms'] / o['p50_ms'] - 1):+.1f}%"))
                rows.append((f"recall@10, tenants of {band}, {label}", "≥ 0.99",
                             f"{s['recall']:.3f} (pgvector + RLS: "
                             + ", ".join(f"{by[k]['recall']:.3f} {k.split(', ')[1]}"
                                         for k in by if k.startswith("pgvector")) + ")"))
    r = load("levels")
    if r:
        s = {x["search"]: x for x in r["searches"]}
        d, o = s["dedicated index"], s["own table (with dedicated)"]
        rows.append(("dedicated index vs own table, p50", "equivalent (spec)",
                     f"{d['p50_ms'] / o['p50_ms']:.3f}x"))
        w = {x["search"]: x for x in r.get("with_all_dedicated", [])}
        if w:
            rows.append((f"the same with {r['dedicated_tenants']} dedicated tenants", "equivalent (spec)",
                         f"{w['dedicated index']['p50_ms'] / w['own table']['p50_ms']:.3f}x"))
        for x in r["during_migration"]:
            rows.append((f"{x['who']} during a migration, p99", "unaffected",
                         f"{x['p99_during_ms']:.2f} ms vs {x['p99_before_ms']:.2f} ms before"))
    tenancy = BENCH / "tenancy.md"
    if tenancy.exists():
        # The admission-control table: | clients | ... | added p50 | added p99 |
        for line in tenancy.read_text().splitlines():
            m = re.fullmatch(r"\| (\d+) \|.*\| ([+-]\d+) µs \| ([+-]\d+) µs \|", line)
            if m:
                rows.append((f"rate limit and fair scheduler on vs off, {m.group(1)} client(s)",
                             "< 1 ms (spec)", f"{m.group(2)} µs p50, {m.group(3)} µs p99"))
    noisy = BENCH / "noisy.md"
    if noisy.exists():
        text = noisy.read_text()
        worst = {}
        for m in re.finditer(r"^\| (\w+) \| (\d+) \| (\d+) \| (\w+) \|.*\| ([\d.]+)x \| ([\d.]+)x \|"
                             r"(?: [\d.]+% / ([\d.]+)% \|)?$", text, flags=re.M):
            w, sessions, tenants, mode, r50, r99, steal = m.groups()
            where = f"{w}, {sessions} noisy sessions, {tenants} quiet tenants"
            if steal is not None:
                where += f"; the host stole {steal}% of the CPU time meanwhile"
            for q, r in (("p50", float(r50)), ("p99", float(r99))):
                if r > worst.get((mode, q), (0, ""))[0]:
                    worst[(mode, q)] = (r, where)
        for q, goal in (("p50", "≤ 1.2x alone"), ("p99", "≤ 2x alone")):
            if ("on", q) in worst:
                r, where = worst[("on", q)]
                off = worst.get(("off", q), (float("nan"), ""))[0]
                rows.append((f"quiet tenant's {q} beside a noisy one, worst case (default settings)",
                             goal, f"{r:.2f}x ({where}); {off:.2f}x at worst without admission control"))
    if not rows:
        return ""
    return "## Summary\n\n" + table(["figure", "goal", "measured"], rows)


def demote(md):
    """Headings one level down (the section's title is level 2), and no pointers to the plot
    files, which follow the section as images."""
    md = re.sub(r"^Plots? (per band )?[^\n]*(png|json)`\.\n", "", md, flags=re.M)
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 1) + " ", md, flags=re.M)


def main():
    IMAGES.mkdir(parents=True, exist_ok=True)
    out = [
        "# Benchmarks\n",
        "Written by `scripts/bench-report` from the latest run of each benchmark; each section "
        "gives the command that reproduces it, the commit it ran on (a trailing + marks "
        "uncommitted changes), when, and how long it took. The machine is shared and noisy: "
        "figures are medians of repeated passes, with their spread where a table shows it, and "
        "comparisons are ratios measured side by side in one run. pgvector runs in the same "
        "PostgreSQL 18 server as ruvector, one database each.\n",
        "## Machine\n",
        table(["", ""], machine()),
    ]
    out.append(summary())
    out.append("## Sections\n")
    body = []
    for name, command in PARTS:
        stem, title = SECTIONS[name]
        out.append(f"- [{title}](#{re.sub(r'[^a-z0-9 -]', '', title.lower()).replace(' ', '-')})")
        body.append(f"## {title}\n")
        meta_path = BENCH / "parts" / f"{name}.json"
        md_path = BENCH / f"{stem}.md"
        if not meta_path.exists() or not md_path.exists():
            body.append(f"Not run yet: `scripts/bench-report {name}` runs `{command}`.\n")
            continue
        meta = json.loads(meta_path.read_text())
        idle = ("idle CPUs kept polling" if meta.get("cpus_awake") else
                "idle CPUs halting (sub-millisecond latencies include the wake-up of a halted CPU)")
        body.append(f"`{meta['command']}`: commit {meta['commit']}, {meta['started']}, "
                    f"{meta['seconds'] / 60:.0f} min, {idle}.\n")
        text = md_path.read_text()
        text = re.sub(r"\A# [^\n]*\n+", "", text)  # the section title replaces the file's
        body.append(demote(text).rstrip() + "\n")
        for png in sorted(BENCH.glob(f"{stem}*.png")):
            if not re.fullmatch(rf"{re.escape(stem)}(-band\d)?\.png", png.name):
                continue
            shutil.copyfile(png, IMAGES / png.name)
            body.append(f"![{png.stem}](benchmarks/{png.name})\n")
    out.append("")
    report = DOCS / "benchmarks.md"
    # A part without results here (a fresh clone, another machine) must not erase the
    # figures the report already holds for it: then the new report goes next to the results.
    missing = [name for name, _ in PARTS
               if not (BENCH / "parts" / f"{name}.json").exists()
               or not (BENCH / f"{SECTIONS[name][0]}.md").exists()]
    current = report.read_text() if report.exists() else ""
    kept = [name for name in missing
            if f"## {SECTIONS[name][1]}\n" in current
            and f"Not run yet: `scripts/bench-report {name}`" not in current]
    if kept:
        report = BENCH / "benchmarks.md"
        print(f"bench-report: no results here for {', '.join(kept)}, which docs/benchmarks.md "
              f"reports: it is left as it is; the report of this machine's results is {report}",
              file=sys.stderr)
    report.write_text("\n".join(out + body))


main()
