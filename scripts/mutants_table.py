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


def lines(path):
    return [l for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def results(root):
    """Counts from each group's last full run; the missed ones as the latest run left them.

    An `--iterate` run (it keeps the run before it as mutants.out.old) tests only what that run
    did not catch, under names with the line numbers of the code as it is now: its figures
    cannot be added to the full run's, so the table stays the full run's and the list beneath
    says what is still missed.
    """
    counts = collections.defaultdict(collections.Counter)
    missed, iterated = [], []
    for out in sorted(root.glob("*/mutants.out")):
        full = out
        while (full / "previously_caught.txt").exists():
            full = full.with_name(full.name + ".old")
            if not full.exists():
                sys.exit(f"mutants: no full run of {out.parent.name} left; run its group again")
        for kind in KINDS:
            for line in lines(full / f"{kind}.txt"):
                counts[line.split(":", 1)[0]][kind] += 1
        missed += lines(out / "missed.txt")
        if full != out:
            iterated.append(out.parent.name)
    return counts, missed, iterated


def section(counts, missed, iterated):
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
    if iterated:
        lines += [
            "",
            f"Re-run since with `--iterate` (what the full run did not catch, after new tests): "
            f"{', '.join(iterated)}.",
        ]
    lines += ["", "Missed in the latest run (each is a change no test noticed):", ""]
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
    counts, missed, iterated = results(root)
    text = doc.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    doc.write_text(text[:start] + section(counts, missed, iterated) + text[end:])
    print(f"mutants: {doc} rewritten", file=sys.stderr)


if __name__ == "__main__":
    main()
