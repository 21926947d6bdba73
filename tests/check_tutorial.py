#!/usr/bin/env python3
"""Compiles and runs the C++ of docs/tutorial.md, so that the tutorial cannot rot.

    check_tutorial.py TUTORIAL.md WORKDIR --compile CXX [FLAGS...] [--link [LIBS...]]

The markdown's ```cpp blocks are assembled into programs, by marker comments (the HTML
comment at the top of the tutorial says the same):

  <!-- tutorial: program NAME -->  the blocks after it belong to program NAME (until the next
                                   such marker); before the first one, to program "tutorial"
  <!-- tutorial: top -->           the next cpp block goes at namespace scope, before main()
                                   (includes, types, functions); unmarked cpp blocks are
                                   statements of main()'s body, in order, so a block uses the
                                   variables of the blocks before it
  <!-- tutorial: output -->        the next ``` block holds lines the program prints, in this
                                   order (other lines may come between); `<...>` in a line
                                   matches any text
  <!-- tutorial: figure FILE -->   the next line is a markdown image `![..](PATH)`: the file
                                   FILE the program writes must equal PATH (relative to the
                                   markdown), so the picture shown is the one the code draws

A program without main() blocks is complete as written (its top blocks define main). Each
program is one translation unit, written as WORKDIR/NAME.cpp with #line directives, so compiler
errors point into the markdown; it runs in a fresh folder WORKDIR/run-NAME. Any compile error,
a nonzero exit, or a missing output line fails the test. Other fenced blocks (python, sh, text
without an output marker) are not touched.
"""
import os
import re
import shutil
import subprocess
import sys

MARKER = re.compile(r"^<!--\s*tutorial:\s*(\w+)\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


class program:
    def __init__(self, name):
        self.name = name
        self.top = []  # (first line number, text)
        self.body = []
        self.outputs = []  # (line number, expected lines)
        self.figures = []  # (line number, written file, committed file)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def parse(md_path):
    lines = open(md_path, encoding="utf-8").read().split("\n")
    programs = {}
    current = None
    pending = None  # the marker waiting for its block: "top", "output" or ("figure", file)

    def prog():
        nonlocal current
        if current is None:
            current = programs.setdefault("tutorial", program("tutorial"))
        return current

    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line.strip())
        if m:
            kind, arg = m.group(1), m.group(2)
            if kind == "program":
                if not re.fullmatch(r"\w+", arg):
                    fail(f"{md_path}:{i + 1}: program marker needs a name: {line}")
                current = programs.setdefault(arg, program(arg))
            elif kind in ("top", "output"):
                pending = kind
            elif kind == "figure":
                j = i + 1
                while j < len(lines) and not lines[j].strip():
                    j += 1
                im = IMAGE.search(lines[j]) if j < len(lines) else None
                if not arg or not im:
                    fail(f"{md_path}:{i + 1}: a figure marker names the file the program "
                         "writes and is followed by a markdown image")
                prog().figures.append((i + 1, arg, im.group(1)))
            elif kind != "comment":
                fail(f"{md_path}:{i + 1}: unknown tutorial marker '{kind}'")
            i += 1
            continue
        f = FENCE.match(line)
        if f:
            indent, lang = f.group(1), f.group(2)
            start = i + 1
            j = start
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            if j == len(lines):
                fail(f"{md_path}:{i + 1}: unclosed code block")
            block = [l[len(indent):] if l.startswith(indent) else l for l in lines[start:j]]
            if pending == "output":
                prog().outputs.append((start + 1, block))
            elif lang == "cpp":
                (prog().top if pending == "top" else prog().body).append((start + 1, block))
            elif pending == "top":
                fail(f"{md_path}:{i + 1}: a top marker must precede a cpp block")
            pending = None
            i = j + 1
            continue
        i += 1
    if pending:
        fail(f"{md_path}: a '{pending}' marker at the end has no block")
    return programs


def source(p, md_path):
    md = os.path.abspath(md_path)
    out = [f"// Generated from {md} by tests/check_tutorial.py: do not edit.",
           "#include <cstdio>", "#include <exception>"]
    for line, block in p.top:
        out.append(f'#line {line} "{md}"')
        out.extend(block)
    if p.body:
        out += ["int main()", "{", "try", "{"]
        for line, block in p.body:
            out.append(f'#line {line} "{md}"')
            out.extend(block)
        out += ["}", "catch (const std::exception& e)", "{",
                '    std::fprintf(stderr, "error: %s\\n", e.what());', "    return 1;", "}", "}"]
    return "\n".join(out) + "\n"


def expected_in_order(p, output, md_path):
    got = output.split("\n")
    pos = 0
    for line, block in p.outputs:
        for k, want in enumerate(block):
            if not want.strip():
                continue
            pattern = re.compile(
                "^" + ".*".join(re.escape(part) for part in want.rstrip().split("<...>")) + "$")
            while pos < len(got) and not pattern.match(got[pos].rstrip()):
                pos += 1
            if pos == len(got):
                fail(f"{md_path}:{line + k}: program '{p.name}' did not print\n    {want}\n"
                     "(after the lines matched before it); it printed:\n" + output)
            pos += 1


def main(argv):
    if len(argv) < 4 or argv[2] != "--compile":
        fail("usage: check_tutorial.py TUTORIAL.md WORKDIR --compile CXX [FLAGS...] "
             "[--link LIBS...]")
    md_path, workdir = argv[0], argv[1]
    rest = argv[3:]
    link = []
    if "--link" in rest:
        k = rest.index("--link")
        rest, link = rest[:k], rest[k + 1:]
    compile_cmd = rest

    programs = parse(md_path)
    if not programs or not any(p.top or p.body for p in programs.values()):
        fail(f"{md_path}: no cpp blocks")
    os.makedirs(workdir, exist_ok=True)

    # Compile every program at once (each is one heavy translation unit), then run them.
    jobs = []
    for p in programs.values():
        src = os.path.join(workdir, p.name + ".cpp")
        exe = os.path.join(workdir, p.name)
        with open(src, "w", encoding="utf-8") as f:
            f.write(source(p, md_path))
        cmd = compile_cmd + [src, "-o", exe] + link
        jobs.append((p, exe, cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True)))
    failed = False
    for p, exe, cmd, proc in jobs:
        log = proc.communicate()[0]
        if proc.returncode != 0:
            print(f"FAIL: program '{p.name}' does not compile:\n  {' '.join(cmd)}\n{log}")
            failed = True
        elif log.strip():
            print(f"program '{p.name}' compiled with warnings:\n{log}")
    if failed:
        sys.exit(1)

    for p, exe, cmd, proc in jobs:
        run_dir = os.path.join(workdir, "run-" + p.name)
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        r = subprocess.run([os.path.abspath(exe)], cwd=run_dir, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120)
        if r.returncode != 0:
            fail(f"program '{p.name}' exited with {r.returncode}\nstdout:\n{r.stdout}\n"
                 f"stderr:\n{r.stderr}")
        expected_in_order(p, r.stdout, md_path)
        for line, written, committed in p.figures:
            got = os.path.join(run_dir, written)
            shown = os.path.join(os.path.dirname(md_path), committed)
            if not os.path.isfile(got):
                fail(f"{md_path}:{line}: program '{p.name}' did not write {written}")
            if not os.path.isfile(shown) or open(got, "rb").read() != open(shown, "rb").read():
                fail(f"{md_path}:{line}: {committed} is not the figure the code draws; "
                     f"update it: cp {os.path.abspath(got)} {os.path.abspath(shown)}")
        print(f"program '{p.name}': {len(p.top)} top and {len(p.body)} main() blocks compiled; "
              f"ran; {sum(1 for _, b in p.outputs for l in b if l.strip())} output lines and "
              f"{len(p.figures)} figure(s) as the tutorial shows")
    print("tutorial OK")


if __name__ == "__main__":
    main(sys.argv[1:])
