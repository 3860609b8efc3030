#!/usr/bin/env python3
"""Validate OCI runtime-spec config.json files against the schema of the runtime-spec (Debian's
golang-github-opencontainers-specs-dev, which scripts/install-deps.sh installs).

    validate-oci-spec.py FILE...

Prints one line per file (as TAP comments: a C test runs it) and exits 0 only if every file is valid. A missing schema is a failure,
never a skip: CI has it, and a test that cannot check must not pass."""
import json
import os
import sys
import warnings

SCHEMA_DIR = os.environ.get(
    "RUNTARA_OCI_SCHEMA_DIR",
    "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema")


def main():
    schema_file = os.path.join(SCHEMA_DIR, "config-schema.json")
    if not os.path.exists(schema_file):
        print(f"# cannot validate: the OCI runtime-spec schema is not at {schema_file}; "
              "install golang-github-opencontainers-specs-dev (scripts/install-deps.sh)")
        return 1
    try:
        import jsonschema
    except ImportError:
        print("# cannot validate: python3-jsonschema is not installed (scripts/install-deps.sh)")
        return 1
    with open(schema_file) as f:
        schema = json.load(f)
    with warnings.catch_warnings():  # RefResolver is deprecated in newer jsonschema, still there
        warnings.simplefilter("ignore", DeprecationWarning)
        resolver = jsonschema.RefResolver("file://" + SCHEMA_DIR + "/", schema)
        validator = jsonschema.Draft4Validator(schema, resolver=resolver)
        bad = 0
        for path in sys.argv[1:]:
            with open(path) as f:
                spec = json.load(f)
            errors = sorted(validator.iter_errors(spec), key=lambda e: list(e.path))
            for e in errors:
                print(f"# {path}: {'/'.join(str(p) for p in e.path)}: {e.message}")
            print(f"# {path}: {'invalid' if errors else 'valid'}")
            bad += bool(errors)
    return 1 if bad or len(sys.argv) < 2 else 0


if __name__ == "__main__":
    sys.exit(main())
