#!/usr/bin/python3
"""Runs the README's server quickstart as written, line by line, against a
real cairnd with ../shared/fixtures, from the project root: every command
must succeed, every query must print what it promises (at least one line;
an `# X` comment naming a literal value must appear in its output)."""

import argparse
import os
import re
import subprocess
import sys
import tempfile

from harness import Cairnd


def quickstart_lines(readme):
    text = open(readme).read()
    section = text[text.index("## Server quickstart"):]
    block = section[section.index("```sh") + len("```sh"):]
    block = block[:block.index("```")]
    # Shell lines, comments and continuation-free (the README keeps them so).
    return [line for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnd", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--root", required=True, help="the project root (README.md, ../shared)")
    args = ap.parse_args()
    cli = os.path.abspath(args.cli)
    failed = passed = 0
    with tempfile.TemporaryDirectory() as tmp:
        server = Cairnd(args.cairnd, os.path.join(tmp, "data"))
        env = dict(os.environ, CAIRN_SERVER=f"127.0.0.1:{server.port}")
        shell_state = ""  # variables set by earlier lines (id=$(...))
        for line in quickstart_lines(os.path.join(args.root, "README.md")):
            if line.startswith("alias cairn="):
                continue  # the test's own cairn, below
            command, _, comment = line.partition("  #")
            script = (f"cairn() {{ {cli} \"$@\"; }}\n{shell_state}\n{command}\nrc=$?\n"
                      "declare -p id 2>/dev/null\nexit $rc\n")
            p = subprocess.run(["bash", "-c", script], cwd=args.root, env=env,
                               capture_output=True, text=True, timeout=120)
            out = p.stdout
            declared = re.findall(r"^declare -- id=.*$", out, re.M)
            if declared:
                shell_state = declared[-1].replace("declare -- ", "")
                out = out.replace(declared[-1], "").strip()
            ok = p.returncode == 0
            query = re.match(r"\s*cairn (get|snapshot|history|stats|health|subscribe|session|checkpoint|source get)",
                             command)
            if ok and query and not out.strip() and "=$(" not in command:
                ok = False
            literal = re.match(r"\s*([A-Z_]+)\s*$", comment)
            if ok and literal and literal.group(1) not in out:
                ok = False
            print(("PASS " if ok else "FAIL ") + command.strip())
            if not ok:
                print(f"  rc {p.returncode}\n  stdout: {out[:500]}\n  stderr: {p.stderr[:500]}")
                failed += 1
            else:
                passed += 1
        server.stop()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
