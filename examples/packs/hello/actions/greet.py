"""Reads the parameter document (one JSON line) from stdin and prints a JSON greeting."""
import json
import platform
import sys

params = json.loads(sys.stdin.readline() or "{}")
name = params.get("name", "world")
print(json.dumps({"greeting": f"Hello, {name}!", "runtime": f"python {platform.python_version()}"}))
