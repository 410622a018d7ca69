#!/usr/bin/env python3
"""Reads meson testlog.json files and prints 'N passed, N failed' counted in doctest test cases.

Several logs (e.g. the plain build and the sanitizer build) add up into one line. A test program
that failed without doctest's summary (a crash, a timeout) counts as one failed case; a program
that skipped itself (exit 77) is reported and counted in neither, unless --no-skips is given
(CI: every test must really run), where it counts as failed. --extra-failures N adds N failures
found elsewhere (sanitizer reports). Exits 1 when anything failed or nothing ran."""
import json
import re
import sys

CASES = re.compile(r"\[doctest\] test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed")

args = sys.argv[1:]
passed = failed = 0
no_skips = False
while args and args[0].startswith("--"):
    if args[0] == "--extra-failures":
        failed += int(args[1])
        args = args[2:]
    elif args[0] == "--no-skips":
        no_skips = True
        args = args[1:]
    else:
        sys.exit(f"summarise.py: unknown option {args[0]}")
for path in args:
    with open(path) as log:
        for line in log:
            entry = json.loads(line)
            if entry.get("result") == "SKIP":
                print(f"SKIPPED: {entry.get('name')} ({path})")
                if no_skips:
                    failed += 1
                continue
            ok = entry.get("result") in ("OK", "EXPECTEDFAIL")
            match = CASES.search(entry.get("stdout") or "")
            if match:
                passed += int(match.group(2))
                failed += int(match.group(3))
                if not ok and int(match.group(3)) == 0:
                    failed += 1  # e.g. a leak or exit-code failure after the summary
            elif ok:
                passed += 1
            else:
                failed += 1
            if not ok:
                print(f"FAILED: {entry.get('name')} ({entry.get('result')}, {path})")
                # What failed, here at the end where a truncated CI log still shows it: doctest's
                # test case lines and failed assertions, at most 40 lines.
                shown = 0
                case = None
                lines = (entry.get("stdout") or "").splitlines()
                for i, text in enumerate(lines):
                    if shown >= 40:
                        break
                    if "TEST CASE:" in text:
                        case = text
                    elif "ERROR:" in text:
                        if case:
                            print(f"    {case[:300]}")
                            case = None
                        print(f"    {text[:300]}")
                        if i + 1 < len(lines):
                            print(f"    {lines[i + 1][:300]}")
                        shown += 3
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
