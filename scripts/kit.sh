#!/usr/bin/env bash
# Checks the deployment kit with the tools Debian packages: the Prometheus
# rules (promtool check and unit tests), the Compose file (docker-compose
# config, no engine needed) and the Helm values against their schema.
# (tests/deployment_kit.rs checks the rest: YAML, templates, dashboard,
# metric names against a running pgsplit.)
set -euo pipefail
cd "$(dirname "$0")/.."
promtool check rules monitoring/pgsplit.rules.yml
(cd monitoring/tests && promtool test rules pgsplit.rules.test.yml)
docker-compose -f docker/docker-compose.yml config -q
python3 - <<'PY'
import json, sys
import jsonschema, yaml
chart = "kubernetes/helm/pgsplit"
schema = json.load(open(f"{chart}/values.schema.json"))
for path in [f"{chart}/values.yaml", f"{chart}/examples/cloudnativepg.yaml", f"{chart}/examples/patroni.yaml"]:
    values = yaml.safe_load(open(f"{chart}/values.yaml"))
    values.update(yaml.safe_load(open(path)))
    jsonschema.validate(values, schema)
    print(f"{path}: valid against values.schema.json")
PY
