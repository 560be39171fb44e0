#!/usr/bin/env bash
# Writes base/prometheusrule.yaml from deploy/prometheus/alerts.yaml, the one source of the
# alert rules: a PrometheusRule's spec is a rule file, so the file is the rule file
# indented under `spec:`. Run it after editing the alerts; tests/deploy.rs fails until
# the two agree.
#
#   deploy/kubernetes/generate-prometheusrule.sh          # rewrite base/prometheusrule.yaml
#   deploy/kubernetes/generate-prometheusrule.sh --stdout # print it instead
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
alerts=$here/../prometheus/alerts.yaml

render() {
    cat <<'HEADER'
# Generated from deploy/prometheus/alerts.yaml by deploy/kubernetes/generate-prometheusrule.sh:
# edit the alerts there and run the script. Add the label your Prometheus's ruleSelector
# wants in your overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: poynt-proxy
  labels:
    app.kubernetes.io/name: poynt-proxy
spec:
HEADER
    sed -e 's/^./  &/' "$alerts"
}

case ${1:-} in
    --stdout) render ;;
    "") render >"$here/base/prometheusrule.yaml" ;;
    *)
        echo "usage: $0 [--stdout]" >&2
        exit 2
        ;;
esac
