"""Renders the chart, validates every manifest against the Kubernetes schema, and keeps the
plain manifests in deploy/manifests/ equal to the chart's output.

Usage: check.py [--update]   (--update rewrites deploy/manifests/ from the chart)
Run through deploy/check.sh, which installs the pinned tools.
"""

import difflib
import pathlib
import sys

import helm_python
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

DEPLOY = pathlib.Path(__file__).resolve().parent
CHART = DEPLOY / "chart" / "pod-identity-agent"
RELEASE, NAMESPACE = "pod-identity-agent", "kube-system"
# The oldest Kubernetes the chart supports and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.25.0", "1.37.0"]
# Values that render, beyond the files in deploy/values/.
RENDERED = {
    "self-managed with JWKS discovery": {
        "clusterName": "c", "region": "r", "mode": "self-managed",
        "selfManaged": {"issuer": "https://x"}, "image": {"repository": "registry.example.com/a"},
    },
    "image pinned by digest": {
        "clusterName": "c", "region": "r",
        "image": {"repository": "registry.example.com/a", "digest": "sha256:" + "0" * 64},
    },
}
# Plain manifests: which values file each one is rendered from.
MANIFESTS = {
    "eks.yaml": "eks.yaml",
    "self-managed.yaml": "self-managed-jwks-url.yaml",
}
# Values that must not render, with the message the render must fail with.
REFUSED = [
    ({"region": "us-west-2"}, "clusterName is required"),
    ({"clusterName": "c"}, "region is required"),
    ({"clusterName": "c", "region": "r", "mode": "fargate"}, "mode must be eks or self-managed"),
    (
        {"clusterName": "c", "region": "r", "mode": "self-managed",
         "selfManaged": {"jwks": {"url": "https://x/jwks"}}},
        "selfManaged.issuer is required",
    ),
    (
        {"clusterName": "c", "region": "r", "mode": "self-managed",
         "selfManaged": {"issuer": "https://x", "jwks": {"url": "https://x/jwks",
                                                         "configMap": {"name": "jwks"}}}},
        "at most one of selfManaged.jwks.url and selfManaged.jwks.configMap",
    ),
    (
        {"clusterName": "c", "region": "r", "metrics": {"serviceMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled needs metrics.service.enabled",
    ),
    ({"clusterName": "c", "region": "r"}, "image.repository is required"),
]

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def render(values):
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    documents = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or not rendered[path].strip():
            continue
        documents.append(f"# Source: {path}\n{rendered[path].strip()}\n")
    return "---\n" + "---\n".join(documents)


def values_file(name):
    return helm_python.values_from_yaml((DEPLOY / "values" / name).read_text())


def validate(name, text):
    """Every document against each Kubernetes version's strict schema."""
    documents = [d for d in yaml.safe_load_all(text) if d]
    if not documents:
        fail(f"{name}: no manifests")
    for document in documents:
        kind = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        if document.get("apiVersion") == "monitoring.coreos.com/v1":
            check_service_monitor(name, kind, document)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                fail(f"{name}: {kind} against Kubernetes {version}: {path}: {error.message}")
            except SchemaNotFoundError:
                fail(f"{name}: {kind}: no schema for {document.get('apiVersion')}")
    print(f"ok   {name}: {len(documents)} manifests valid for Kubernetes {KUBERNETES_VERSIONS}")


def check_service_monitor(name, kind, document):
    """A CRD kind the Kubernetes schema lacks: check the fields Prometheus Operator needs."""
    spec = document.get("spec", {})
    endpoints = spec.get("endpoints") or []
    if (
        document.get("kind") != "ServiceMonitor"
        or not spec.get("selector", {}).get("matchLabels")
        or not endpoints
        or not all(isinstance(e.get("port"), str) and e["port"] for e in endpoints)
    ):
        fail(f"{name}: {kind}: not a ServiceMonitor with a selector and named endpoint ports")


def main(update):
    # helm lint, strict, with every values file.
    for values in sorted((DEPLOY / "values").glob("*.yaml")):
        report = helm_python.lint(str(CHART), values_file(values.name), strict=True)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += report.get("errors") or []
        for problem in problems:
            fail(f"helm lint with {values.name}: {problem}")
        print(f"ok   helm lint --strict with values/{values.name}")

    # Every values file renders and validates.
    rendered = {}
    for values in sorted((DEPLOY / "values").glob("*.yaml")):
        try:
            rendered[values.name] = render(values_file(values.name))
        except helm_python.errors.HelmError as error:
            fail(f"render with values/{values.name}: {error}")
            continue
        validate(f"chart with values/{values.name}", rendered[values.name])

    for name, values in RENDERED.items():
        try:
            text = render(values)
        except helm_python.errors.HelmError as error:
            fail(f"render {name}: {error}")
            continue
        if "digest" in name and "image: registry.example.com/a@sha256:" not in text:
            fail(f"render {name}: the image is not pinned by its digest")
        if "self-managed" in name and ("--jwks-url" in text or "--jwks-file" in text):
            fail(f"render {name}: passes a JWKS location")
        validate(f"chart, {name}", text)

    # Values that cannot work are refused at render time, with a message that says why.
    for values, message in REFUSED:
        try:
            render(values)
            fail(f"render with {values} succeeded; expected: {message}")
        except helm_python.errors.HelmError as error:
            if message not in str(error):
                fail(f"render with {values}: {error}; expected: {message}")
    print(f"ok   {len(REFUSED)} unworkable values refused")

    # Plain manifests are the chart's output.
    for manifest, values in MANIFESTS.items():
        path = DEPLOY / "manifests" / manifest
        expected = (
            f"# Generated from deploy/chart with deploy/values/{values} by "
            f"`bash deploy/check.sh --update`;\n# edit the chart or the values, not this file.\n"
            + rendered.get(values, "")
        )
        if update:
            path.write_text(expected)
            print(f"wrote {path.relative_to(DEPLOY.parent)}")
        elif not path.exists() or path.read_text() != expected:
            actual = path.read_text().splitlines(True) if path.exists() else []
            diff = "".join(difflib.unified_diff(actual, expected.splitlines(True),
                                                str(path), "chart output"))
            fail(f"{path.relative_to(DEPLOY.parent)} differs from the chart "
                 f"(run bash deploy/check.sh --update):\n{diff}")
        validate(f"manifests/{manifest}", path.read_text() if path.exists() else "")

    # The pod-side examples.
    for path in sorted((DEPLOY / "pod-side").glob("*.yaml")):
        validate(f"pod-side/{path.name}", path.read_text())

    if failures:
        print(f"deploy check: {len(failures)} failure(s)")
        return 1
    print("deploy check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main("--update" in sys.argv[1:]))
