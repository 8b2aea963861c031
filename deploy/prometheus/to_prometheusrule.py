"""Write k8s/base/prometheusrule.yaml from deploy/prometheus/broadcaster-rules.yml (same groups).

Run from the repository root after editing the rules: python deploy/prometheus/to_prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "broadcaster-rules.yml"
TARGET = ROOT / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# The alerting rules of deploy/prometheus/broadcaster-rules.yml as a PrometheusRule, for a
# cluster that runs the Prometheus Operator (listed in k8s/base/kustomization.yaml beside the
# ServiceMonitor; drop both from your overlay where the operator is not installed).
# Its groups must equal the plain file's (tests/test_dashboard_and_rules.py); edit the plain
# file and regenerate this one with `python deploy/prometheus/to_prometheusrule.py`.
"""


def render() -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "broadcaster",
            "namespace": "broadcaster",
            "labels": {"app.kubernetes.io/name": "broadcaster", "role": "alert-rules"},
        },
        "spec": yaml.safe_load(RULES.read_text(encoding="utf-8")),
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
