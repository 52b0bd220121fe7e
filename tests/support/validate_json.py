#!/usr/bin/python3
"""validate_json.py SCHEMA DEFINITION FILE - validates the JSON document in FILE against
SCHEMA#/definitions/DEFINITION with Debian's python3-jsonschema (draft 7). Exit 0 when valid, 1 with the
errors on stderr when not, 2 when the tools or files are missing. Used by tests/test_observe.c."""
import json
import sys

try:
    import jsonschema
except ImportError:
    print("validate_json: python3-jsonschema is missing (tools/install-deps installs it)", file=sys.stderr)
    sys.exit(2)

if len(sys.argv) != 4:
    print(__doc__, file=sys.stderr)
    sys.exit(2)
with open(sys.argv[1]) as f:
    schema = json.load(f)
with open(sys.argv[3]) as f:
    doc = json.load(f)
target = {"$ref": "#/definitions/" + sys.argv[2], "definitions": schema["definitions"]}
validator = jsonschema.Draft7Validator(target)
errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("validate_json: %s: at %s: %s" % (sys.argv[2], "/".join(str(p) for p in e.path) or "(root)", e.message),
          file=sys.stderr)
sys.exit(1 if errors else 0)
