"""Renders the chart, validates every manifest against the Kubernetes schema, checks that the
reference chart's values (deploy/values/reference-defaults.yaml) and the hybrid DaemonSets
render as the reference chart renders them, and keeps the plain manifests in deploy/manifests/
equal to the chart's output.

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
RELEASE, NAMESPACE = "eks-pod-identity-agent", "kube-system"
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
# Rendered and validated like the files in deploy/values/, and then checked by a function below:
# The image every render names (the chart requires one; this project publishes none).
IMAGE = {"image": {"repository": "registry.example.com/pod-identity-agent"}}

# (name, values files layered in order, values on top, check).
CHECKED = [
    ("values/eks.yaml with its hybrid DaemonSets", ["eks.yaml"],
     {"daemonsets": {"hybrid": {"create": True}}}, "kubernetes_api"),
    ("kubernetesApi rotationValidation and podLiveness false", ["eks.yaml"],
     {"kubernetesApi": {"rotationValidation": False, "podLiveness": False}},
     "kubernetes_api_off"),
    ("the reference chart's defaults", ["reference-defaults.yaml"], {}, "reference_defaults"),
    ("the reference chart's defaults with its hybrid DaemonSets",
     ["reference-defaults.yaml"],
     {"daemonsets": {"hybrid": {"create": True}, "hybrid-bottlerocket": {"create": True}}},
     "reference_hybrid"),
    ("values/hybrid.yaml", ["hybrid.yaml"], {}, "hybrid"),
    ("agent.advertiseProxyPort false", ["hybrid.yaml"], {"agent": {"advertiseProxyPort": False}},
     "no_proxy_port"),
    ("an isolated region", [], {**IMAGE, "clusterName": "c", "env": {"AWS_REGION": "us-iso-east-1"}},
     "iso_ca_bundle"),
    ("caBundle", [], {**IMAGE, "clusterName": "c", "region": "r", "caBundle": "/etc/ssl/certs/corp.pem"},
     "own_ca_bundle"),
    ("AWS_CA_BUNDLE in env", [],
     {**IMAGE, "clusterName": "c", "env": {"AWS_REGION": "us-iso-east-1", "AWS_CA_BUNDLE": "/ca.pem"}},
     "env_ca_bundle"),
    ("flags given in agent.additionalArgs", [],
     {**IMAGE, "clusterName": "c", "region": "r", "metrics": {"enabled": True},
      "agent": {"additionalArgs": {"-p": "8080", "--metrics-port": "9999", "--fips": "",
                                   "--verbosity": "debug"}}},
     "flags_replaced"),
    ("env as a list", [],
     {**IMAGE, "clusterName": "c", "region": "r",
      "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]},
     "env_list"),
]
# Plain manifests: which values file each one is rendered from.
MANIFESTS = {
    "eks.yaml": "eks.yaml",
    "eks-hybrid.yaml": "hybrid.yaml",
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
        {"clusterName": "c", "region": "us-west-2", "env": {"AWS_REGION": "eu-west-1"}},
        "region \"us-west-2\" and env.AWS_REGION \"eu-west-1\" differ",
    ),
    (
        {"clusterName": "c", "region": "r", "env": "AWS_REGION=r"},
        "env must be a map of name to value",
    ),
    (
        {"clusterName": "c", "region": "r", "agent": {"additionalArgs": ["-v", "debug"]}},
        "agent.additionalArgs must be a map of flag to value",
    ),
    (
        {"clusterName": "c", "region": "r",
         "daemonsets": {"hybrid": {"create": True, "nameSuffix": ""}}},
        "would both be named eks-pod-identity-agent",
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


# What the rendered objects must be. Each check returns the list of what is wrong.

AGENT = "eks-pod-identity-agent"
HYBRID_CREDENTIALS = {f"{AGENT}-hybrid": "/eks-hybrid/.aws",
                      f"{AGENT}-hybrid-bottlerocket": "/var/eks-hybrid/.aws"}


def objects(documents, kind):
    return {d["metadata"]["name"]: d for d in documents if d.get("kind") == kind}


def pod_spec(daemonset):
    return daemonset["spec"]["template"]["spec"]


def agent_container(daemonset):
    return pod_spec(daemonset)["containers"][0]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def follows(args, first, second):
    """`first` then `second` as two consecutive arguments."""
    return any(a == first and b == second for a, b in zip(args, args[1:]))


def names_and_labels(documents, expected_daemonsets):
    problems = []
    daemonsets = objects(documents, "DaemonSet")
    if sorted(daemonsets) != sorted(expected_daemonsets):
        problems.append(f"DaemonSets {sorted(daemonsets)}, expected {sorted(expected_daemonsets)}")
    for name, ds in daemonsets.items():
        labels = ds["metadata"]["labels"]
        if labels.get("app") != AGENT or labels.get("app.kubernetes.io/name") != name:
            problems.append(f"{name}: labels {labels}")
        if ds["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") != name:
            problems.append(f"{name}: selector {ds['spec']['selector']}")
        spec = pod_spec(ds)
        if [c["name"] for c in spec["containers"]] != [AGENT]:
            problems.append(f"{name}: containers {[c['name'] for c in spec['containers']]}")
        if [c["name"] for c in spec.get("initContainers", [])] != [f"{AGENT}-init"]:
            problems.append(f"{name}: init containers {spec.get('initContainers')}")
        # The node's resolver, as the reference (hostNetwork with the default policy).
        if not spec.get("hostNetwork") or spec.get("dnsPolicy") != "Default":
            problems.append(f"{name}: hostNetwork {spec.get('hostNetwork')}, dnsPolicy "
                            f"{spec.get('dnsPolicy')}")
        node_name = env_of(agent_container(ds)).get("NODE_NAME", {})
        if node_name.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
            problems.append(f"{name}: NODE_NAME {node_name}")
    return problems


def check_reference_defaults(documents):
    problems = names_and_labels(documents, [AGENT])
    if sorted(d["kind"] for d in documents) != [
            "ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]:
        problems.append(f"objects {[d['kind'] for d in documents]}")
    ds = objects(documents, "DaemonSet").get(AGENT)
    if not ds:
        return problems
    spec = pod_spec(ds)
    container = agent_container(ds)
    args = container["args"]
    if (args[0] != "server" or not follows(args, "-v", "trace")
            or "--cluster-name=EKS_CLUSTER_NAME" not in args):
        problems.append(f"agent args {args}")
    # -v given in agent.additionalArgs replaces the chart's own verbosity flag.
    if any(a.startswith("--verbosity") for a in args):
        problems.append(f"agent args pass the verbosity twice: {args}")
    init_args = spec["initContainers"][0]["args"]
    if init_args[0] != "initialize" or not follows(init_args, "-v", "trace") or any(
            a.startswith("--verbosity") for a in init_args):
        problems.append(f"init args {init_args}")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if ports != {"proxy": 80, "probes-port": 2703}:
        problems.append(f"ports {ports}")
    env = env_of(container)
    if env.get("AWS_REGION", {}).get("value") != "AWS_REGION_NAME" or [
            e["name"] for e in container["env"]].count("AWS_REGION") != 1:
        problems.append(f"env {container['env']}")
    annotations = ds["spec"]["template"]["metadata"].get("annotations", {})
    if annotations != {"prometheus.io/port": "2705", "prometheus.io/scrape": "true"}:
        problems.append(f"pod annotations {annotations}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "probes-port":
            problems.append(f"{probe} {container.get(probe)}")
    if container["imagePullPolicy"] != "Always":
        problems.append(f"imagePullPolicy {container['imagePullPolicy']}")
    return problems


def check_hybrid_daemonsets(documents):
    problems = names_and_labels(documents, [AGENT, *HYBRID_CREDENTIALS])
    daemonsets = objects(documents, "DaemonSet")
    cloud = daemonsets.get(AGENT)
    if cloud:
        terms = pod_spec(cloud)["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        if not all({"key": "eks.amazonaws.com/compute-type", "operator": "NotIn"}.items()
                   <= e.items() and "hybrid" in e["values"]
                   for term in terms for e in term["matchExpressions"]
                   if e["key"] == "eks.amazonaws.com/compute-type"):
            problems.append(f"{AGENT}: does not exclude hybrid nodes: {terms}")
        context = agent_container(cloud)["securityContext"]
        if context.get("runAsUser") != 65532 or not context.get("runAsNonRoot"):
            problems.append(f"{AGENT}: securityContext {context}")
        if "AWS_SHARED_CREDENTIALS_FILE" in env_of(agent_container(cloud)):
            problems.append(f"{AGENT}: AWS_SHARED_CREDENTIALS_FILE set")
        if follows(agent_container(cloud)["args"], "--rotate-credentials", "true"):
            problems.append(f"{AGENT}: rotates credentials")
    for name, host_path in HYBRID_CREDENTIALS.items():
        ds = daemonsets.get(name)
        if not ds:
            continue
        spec = pod_spec(ds)
        container = agent_container(ds)
        expressions = {e["key"]: e for term in spec["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            for e in term["matchExpressions"]}
        bottlerocket = name.endswith("bottlerocket")
        compute = expressions.get("eks.amazonaws.com/compute-type", {})
        variant = expressions.get("os.bottlerocket.aws/variant", {}).get("operator")
        if (compute.get("operator"), compute.get("values")) != ("In", ["hybrid"]) or variant != (
                "Exists" if bottlerocket else "DoesNotExist"):
            problems.append(f"{name}: node affinity {expressions}")
        if not follows(container["args"], "--rotate-credentials", "true"):
            problems.append(f"{name}: args {container['args']}")
        context = container["securityContext"]
        expected = {
            "runAsUser": 0, "runAsGroup": 0, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        }
        if any(context.get(k) != v for k, v in expected.items()):
            problems.append(f"{name}: securityContext {context}")
        selinux = context.get("seLinuxOptions", {}).get("type")
        if selinux != ("spc_t" if bottlerocket else None):
            problems.append(f"{name}: SELinux type {selinux}")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        credentials = volumes.get("aws-credentials", {}).get("hostPath", {})
        if credentials != {"path": host_path, "type": "Directory"}:
            problems.append(f"{name}: credentials volume {volumes}")
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        mount = mounts.get("aws-credentials", {})
        if mount.get("mountPath") != "/root/.aws" or mount.get("readOnly") is not True:
            problems.append(f"{name}: credentials mount {mounts}")
        credentials_file = env_of(container).get("AWS_SHARED_CREDENTIALS_FILE", {}).get("value")
        if credentials_file != "/root/.aws/credentials":
            problems.append(f"{name}: AWS_SHARED_CREDENTIALS_FILE {credentials_file}")
    return problems


def check_reference_hybrid(documents):
    problems = check_hybrid_daemonsets(documents)
    for name, ds in objects(documents, "DaemonSet").items():
        if not follows(agent_container(ds)["args"], "-v", "trace"):
            problems.append(f"{name}: args {agent_container(ds)['args']}")
    return problems


def check_no_proxy_port(documents):
    problems = []
    for name, ds in objects(documents, "DaemonSet").items():
        container = agent_container(ds)
        ports = [p["containerPort"] for p in container["ports"]]
        if 80 in ports or "--port=80" not in container["args"]:
            problems.append(f"{name}: ports {ports}, args {container['args']}")
    return problems or ([] if objects(documents, "DaemonSet") else ["no DaemonSet"])


def ca_bundle_problems(documents, path):
    problems = []
    for name, ds in objects(documents, "DaemonSet").items():
        container = agent_container(ds)
        value = env_of(container).get("AWS_CA_BUNDLE", {}).get("value")
        volumes = {v["name"]: v for v in pod_spec(ds).get("volumes", [])}
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        if path is None:
            if "ca-bundle" in volumes or "ca-bundle" in mounts:
                problems.append(f"{name}: mounts a CA bundle: {volumes}")
            continue
        host_file = volumes.get("ca-bundle", {}).get("hostPath")
        mount_path = mounts.get("ca-bundle", {}).get("mountPath")
        if value != path or host_file != {"path": path, "type": "File"} or mount_path != path:
            problems.append(f"{name}: AWS_CA_BUNDLE {value}, volumes {volumes}, mounts {mounts}")
    return problems


def check_iso_ca_bundle(documents):
    return ca_bundle_problems(documents, "/etc/pki/tls/certs/ca-bundle.crt")


def check_own_ca_bundle(documents):
    return ca_bundle_problems(documents, "/etc/ssl/certs/corp.pem")


def check_env_ca_bundle(documents):
    problems = ca_bundle_problems(documents, None)
    for name, ds in objects(documents, "DaemonSet").items():
        env = [e for e in agent_container(ds)["env"] if e["name"] == "AWS_CA_BUNDLE"]
        if env != [{"name": "AWS_CA_BUNDLE", "value": "/ca.pem"}]:
            problems.append(f"{name}: AWS_CA_BUNDLE {env}")
    return problems


def check_flags_replaced(documents):
    problems = []
    for name, ds in objects(documents, "DaemonSet").items():
        args = agent_container(ds)["args"]
        own = [a for a in args if "=" in a
               and a.split("=")[0] in ("--port", "--metrics-port", "--verbosity")]
        if own or not (follows(args, "-p", "8080") and follows(args, "--metrics-port", "9999")
                       and follows(args, "--verbosity", "debug")):
            problems.append(f"{name}: args {args}")
        # A flag with an empty value is passed alone.
        if "--fips" not in args or "" in args:
            problems.append(f"{name}: args {args}")
    return problems


def check_env_list(documents):
    problems = []
    for name, ds in objects(documents, "DaemonSet").items():
        env = env_of(agent_container(ds))
        proxy = env.get("HTTPS_PROXY", {}).get("value")
        if proxy != "http://proxy:3128" or "AWS_REGION" not in env:
            problems.append(f"{name}: env {agent_container(ds)['env']}")
    return problems


def check_kubernetes_api(documents):
    """Rotation validation and pod liveness on (the defaults): the agent's token mounted, RBAC
    for the pod watch bound to its ServiceAccount, the key cache in an emptyDir."""
    problems = []
    accounts = objects(documents, "ServiceAccount")
    account = accounts.get(AGENT)
    if not account or account.get("automountServiceAccountToken") is not True:
        problems.append(f"service account {account}")
    role = objects(documents, "ClusterRole").get(AGENT)
    rules = role and role.get("rules")
    if rules != [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]:
        problems.append(f"cluster role rules {rules}")
    binding = objects(documents, "ClusterRoleBinding").get(AGENT)
    if not binding or binding["roleRef"] != {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT} or [
            (s["kind"], s["name"]) for s in binding["subjects"]] != [("ServiceAccount", AGENT)]:
        problems.append(f"cluster role binding {binding}")
    for name, ds in objects(documents, "DaemonSet").items():
        spec = pod_spec(ds)
        container = agent_container(ds)
        if spec.get("automountServiceAccountToken") is not True or spec.get(
                "serviceAccountName") != AGENT:
            problems.append(f"{name}: service account token not mounted")
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if mounts.get("jwks-cache", {}).get("mountPath") != "/var/lib/eks-pod-identity-agent" or (
                "emptyDir" not in volumes.get("jwks-cache", {})):
            problems.append(f"{name}: key cache {mounts.get('jwks-cache')} {volumes.get('jwks-cache')}")
        if any(a.startswith(("--rotation-validation", "--pod-liveness")) for a in container["args"]):
            problems.append(f"{name}: turns a Kubernetes block off: {container['args']}")
    return problems


def check_kubernetes_api_off(documents):
    """Both off: the flags rendered, no token, no RBAC, no key cache."""
    problems = []
    kinds = sorted(d["kind"] for d in documents)
    if "ClusterRole" in kinds or "ClusterRoleBinding" in kinds:
        problems.append(f"objects {kinds}")
    account = objects(documents, "ServiceAccount").get(AGENT)
    if not account or account.get("automountServiceAccountToken") is not False:
        problems.append(f"service account {account}")
    for name, ds in objects(documents, "DaemonSet").items():
        spec = pod_spec(ds)
        args = agent_container(ds)["args"]
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: service account token mounted")
        if "--rotation-validation=false" not in args or "--pod-liveness=false" not in args:
            problems.append(f"{name}: args {args}")
        if any(v["name"] == "jwks-cache" for v in spec.get("volumes", [])):
            problems.append(f"{name}: key cache volume without rotation validation")
    return problems


CHECKS = {
    "kubernetes_api": check_kubernetes_api,
    "kubernetes_api_off": check_kubernetes_api_off,
    "reference_defaults": check_reference_defaults,
    "reference_hybrid": check_reference_hybrid,
    "hybrid": check_hybrid_daemonsets,
    "no_proxy_port": check_no_proxy_port,
    "iso_ca_bundle": check_iso_ca_bundle,
    "own_ca_bundle": check_own_ca_bundle,
    "env_ca_bundle": check_env_ca_bundle,
    "flags_replaced": check_flags_replaced,
    "env_list": check_env_list,
}


def layered(files, values):
    """Values files merged in order, then `values`, as Helm merges several -f files and --set."""
    def merge(base, top):
        for key, value in top.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base
    result = {}
    for name in files:
        merge(result, yaml.safe_load((DEPLOY / "values" / name).read_text()))
    return merge(result, values)


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

    # The reference chart's values and the hybrid DaemonSets render as the reference renders
    # them, with this chart's additions.
    for name, files, values, check in CHECKED:
        try:
            text = render(layered(files, values))
        except helm_python.errors.HelmError as error:
            fail(f"render {name}: {error}")
            continue
        validate(f"chart with {name}", text)
        problems = CHECKS[check]([d for d in yaml.safe_load_all(text) if d])
        for problem in problems:
            fail(f"chart with {name}: {problem}")
        if not problems:
            print(f"ok   chart with {name}: {check.replace('_', ' ')} as expected")

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
