"""A scripted stand-in for an LLM agent that edits, then keeps working for a while.

It adds the missing ENV line the app's log asks for (like tests/fixtures/agents/
set_env_agent.py), then sleeps: a worker killed in that window leaves an edited
workspace behind, which the next delivery of the patch step must put back first.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--workspace", required=True)
parser.add_argument("--analysis", required=True)
args = parser.parse_args()

analysis = json.loads(Path(args.analysis).read_text())
log_lines = Path(args.analysis).with_name("analyze.log").read_text()
match = re.search(r"environment variable (\w+) is not set", log_lines)
if not match:
    print("agent: nothing I know how to fix")
    sys.exit(0)
dockerfile = Path(args.workspace) / analysis["service"] / "Dockerfile"
text = dockerfile.read_text()
dockerfile.write_text(text.replace("\nCMD ", f"\nENV {match.group(1)}=set-by-agent\nCMD ", 1))
print(f"agent: set {match.group(1)}", flush=True)
time.sleep(4)
print("agent: done", flush=True)
