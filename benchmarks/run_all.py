"""Every benchmark in one command; their printed numbers go into `docs/benchmarks.md` with the machine's facts.

    .venv/bin/python benchmarks/run_all.py             # data build, evaluation, training (about 32 min on 2 idle cores)
    .venv/bin/python benchmarks/run_all.py --quick     # fewer rounds and steps (about 5 min), same measurements

Each script runs in its own process and prints ratios measured side by side in that run; this runner only collects
them. The section between the `measured` markers of `docs/benchmarks.md` is rewritten; the text around it (what the
numbers mean) is not.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- measured:start (written by benchmarks/run_all.py) -->", "<!-- measured:end -->"
# (script, arguments, arguments with --quick)
BENCHMARKS = [
    ("bench_data_build.py", [], []),
    ("bench_evaluation.py", ["--threads", "1"], ["--threads", "1", "--examples", "4"]),
    ("bench_training.py", ["--rounds", "3", "--levers"], ["--rounds", "1", "--steps", "3", "--lengths", "128", "512"]),
]


def machine_facts() -> list[str]:
    """What the numbers depend on: CPU, its matrix extensions, cores, memory, load and library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    extensions = [flag for flag in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if flag in flags]
    memory = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0.0) if Path("/proc/meminfo").exists() else 0.0
    libraries = ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "peft", "datasets",
                                                                 "accelerate"))
    return [f"- CPU: {model}, {os.cpu_count()} cores, extensions: {', '.join(extensions) or 'none listed'}",
            f"- memory: {memory:.0f} GB; load average at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- Python {platform.python_version()}, {libraries}",
            f"- measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"]


def run(script: str, arguments: list[str]) -> tuple[str, float]:
    """Run one benchmark, echoing its output as it comes; returns the output and the wall time."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *arguments]
    print(f"\n==> {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if process.wait():
        raise SystemExit(f"{script} failed with exit code {process.returncode}")
    return "".join(lines), time.perf_counter() - start


def write_section(text: str, section: str) -> str:
    """`text` with the measured section replaced (appended if the markers are missing)."""
    block = f"{START}\n{section.rstrip()}\n{END}"
    if START in text and END in text:
        return text[: text.index(START)] + block + text[text.index(END) + len(END):]
    return text.rstrip() + "\n\n## Latest measurements\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--only", nargs="+", choices=[name for name, _, _ in BENCHMARKS], help="run these only")
    parser.add_argument("--docs", type=Path, default=DOCS, help="file to write the measured section into")
    args = parser.parse_args(argv)
    facts = machine_facts()
    print("\n".join(facts))
    parts = []
    for script, full, quick in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        arguments = quick if args.quick else full
        output, seconds = run(script, arguments)
        command = " ".join(["python", f"benchmarks/{script}", *arguments])
        parts.append(f"### `{command}` ({seconds:.0f} s)\n\n```\n{output.rstrip()}\n```\n")
    section = "\n".join(facts) + "\n\n" + "\n".join(parts)
    text = args.docs.read_text(encoding="utf-8") if args.docs.exists() else "# Benchmarks\n"
    args.docs.write_text(write_section(text, section), encoding="utf-8")
    print(f"\nwritten: {args.docs}")


if __name__ == "__main__":
    main()
