#!/usr/bin/env python3
"""Writes the mutation scores found under target/mutants/<group>/mutants.out into docs/testing.md.

    mutants_table.py RESULTS_DIR DOC

Per source file: mutants caught by a failing test, caught by a timeout, missed, and unviable (did
not build); the score is caught (either way) over viable. The missed ones are listed beneath.
"""
import collections
import datetime
import pathlib
import subprocess
import sys

BEGIN = "<!-- mutants:begin (written by scripts/mutants.sh) -->"
END = "<!-- mutants:end -->"
KINDS = ("caught", "timeout", "missed", "unviable")


def results(root):
    counts = collections.defaultdict(collections.Counter)
    missed = []
    for out in sorted(root.glob("*/mutants.out")):
        for kind in KINDS:
            path = out / f"{kind}.txt"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                if line.strip():
                    counts[line.split(":", 1)[0]][kind] += 1
                    if kind == "missed":
                        missed.append(line)
    return counts, missed


def section(counts, missed):
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        BEGIN,
        "",
        f"Measured {datetime.date.today()} at {revision or 'unknown'} by `scripts/mutants.sh`.",
        "",
        "| file | mutants | caught | by timeout | missed | unviable | score |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = collections.Counter()
    for name in sorted(counts):
        c = counts[name]
        total.update(c)
        lines.append(row(name, c))
    lines.append(row("**all**", total))
    lines += ["", "Missed (each is a change no test noticed):", ""]
    lines += [f"- `{m}`" for m in missed] or ["- none"]
    lines += ["", END]
    return "\n".join(lines)


def row(name, c):
    viable = c["caught"] + c["timeout"] + c["missed"]
    score = f"{100 * (c['caught'] + c['timeout']) / viable:.1f} %" if viable else "-"
    return (
        f"| {name} | {viable + c['unviable']} | {c['caught']} | {c['timeout']} | {c['missed']} "
        f"| {c['unviable']} | {score} |"
    )


def main():
    root, doc = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    counts, missed = results(root)
    text = doc.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    doc.write_text(text[:start] + section(counts, missed) + text[end:])
    print(f"mutants: {doc} rewritten", file=sys.stderr)


if __name__ == "__main__":
    main()
