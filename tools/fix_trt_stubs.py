"""Make a parseable copy of the installed tensorrt-stubs for mypy.

tensorrt-stubs (10.8 to 10.13, every version on PyPI) is generated from the pybind11
signatures and has Python syntax errors: parameters named ``in``/``out`` and non-default
parameters after defaulted ones. mypy refuses the whole package because of them. This
copies ``tensorrt`` and ``tensorrt_bindings`` into OUT_DIR with those two defects mended
(renamed parameters, ``= ...`` defaults) and nothing else changed; the Makefile points
MYPYPATH at OUT_DIR. Nothing of TensorRT's is committed.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import sysconfig
from pathlib import Path


def _fix_defaults(line: str) -> str:
    m = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not m:
        return line
    parts, depth, cur = [], 0, ""
    for ch in m.group(2):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    seen_default, out = False, []
    for p in parts:
        bare = p.strip()
        if bare.startswith("*"):
            seen_default = False
        elif "=" in bare:
            seen_default = True
        elif seen_default and bare:
            p = p + " = ..."
        out.append(p)
    return m.group(1) + ",".join(out) + m.group(3)


def fix(text: str) -> str:
    text = re.sub(r"\b(in|out|lambda|from|def|class)(: )", r"\1_\2", text)
    return "\n".join(_fix_defaults(line) for line in text.splitlines()) + "\n"


def main(out_dir: str) -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    for pkg in ("tensorrt", "tensorrt_bindings"):
        src = site / pkg
        if not src.is_dir():
            print(f"tensorrt-stubs are not installed ({src} missing); pip install --no-deps tensorrt-stubs", file=sys.stderr)
            return 2
        for f in src.rglob("*.pyi"):
            dst = out / f.relative_to(site)
            dst.parent.mkdir(parents=True, exist_ok=True)
            text = fix(f.read_text(encoding="utf-8"))
            ast.parse(text, filename=str(f))  # fail loudly if a new defect appears
            dst.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
