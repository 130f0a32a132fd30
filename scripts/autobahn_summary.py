#!/usr/bin/env python3
"""Summarises an Autobahn TestSuite report directory (index.json plus one JSON per case).

    python3 scripts/autobahn_summary.py target/autobahn/reports

Prints a markdown table of the verdicts (message exchange, closing handshake) and every case
that is not plainly OK with its reason. Exits 1 unless every case outside 12.* and 13.* is OK,
NON-STRICT or INFORMATIONAL with an OK or INFORMATIONAL close, and every compression case
(12.*, 13.*) is cleanly declined: UNIMPLEMENTED, closed OK.
"""

import collections
import json
import os
import re
import sys

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL"}
COMPRESSION = ("12", "13")
# kosoku 0.1.0 serves the whole Autobahn suite: 517 cases, 216 of them on compression.
EXPECTED = {"other": 301, "compression": 216}


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def main(reports):
    with open(os.path.join(reports, "index.json")) as f:
        index = json.load(f)
    if len(index) != 1:
        sys.exit(f"expected one agent in the report, found {sorted(index)}")
    (agent, cases), = index.items()
    groups = {"other": {}, "compression": {}}
    for case_id, verdict in cases.items():
        group = "compression" if case_id.split(".")[0] in COMPRESSION else "other"
        groups[group][case_id] = verdict

    problems = []
    for group, expected in EXPECTED.items():
        if len(groups[group]) != expected:
            problems.append(f"{len(groups[group])} {group} cases in the report, expected {expected}")

    print(f"Autobahn TestSuite (kosoku fuzzingserver), agent `{agent}`: {len(cases)} cases\n")
    print("| cases | behavior | close | count |")
    print("|---|---|---|---|")
    for group, title in (("other", "all but 12.*, 13.*"), ("compression", "12.*, 13.* (compression)")):
        counts = collections.Counter(
            (v["behavior"], v["behaviorClose"]) for v in groups[group].values()
        )
        for (behavior, close), n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"| {title} | {behavior} | {close} | {n} |")

    notes = []
    for case_id in sorted(groups["other"], key=case_key):
        v = groups["other"][case_id]
        behavior, close = v["behavior"], v["behaviorClose"]
        if behavior == "OK" and close == "OK":
            continue
        with open(os.path.join(reports, v["reportfile"])) as f:
            detail = json.load(f)
        description = re.sub(r"<[^>]+>", " ", detail.get("description", ""))
        description = " ".join(description.split())
        if len(description) > 100:
            description = description[:97] + "..."
        notes.append(
            f"- {case_id} {behavior}/{close} (close code {v['remoteCloseCode']}): "
            f"{description} Result: {detail.get('result', '')}"
        )
        if behavior not in PASSING or close not in PASSING_CLOSE:
            problems.append(f"{case_id}: {behavior}/{close}")
    for case_id in sorted(groups["compression"], key=case_key):
        v = groups["compression"][case_id]
        if (v["behavior"], v["behaviorClose"]) != ("UNIMPLEMENTED", "OK"):
            problems.append(f"{case_id}: {v['behavior']}/{v['behaviorClose']}, expected declined")
    if notes:
        print("\nNot plainly OK:")
        print("\n".join(notes))
    if problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems))
        return 1
    other = groups["other"]
    print(f"\n{len(groups['compression'])} compression cases (12.*, 13.*) cleanly declined")
    print(f"autobahn: {len(other)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
