#!/usr/bin/env python3
"""Lists the foreign types in each library crate's public API and checks them against an allowlist.

A crate's public API exposes other crates' types wherever a public signature, field, variant,
trait bound or trait implementation names them; each such crate becomes part of the API's
semver. This script reads the rustdoc JSON of each crate (built with the nightly toolchain's
`--output-format json`), walks every public item, and prints each foreign crate with the items
that expose it. It exits 1 when a crate outside the allowlist below appears.

    python3 scripts/external-types.py [--build] [--verbose]

`--build` runs `cargo +nightly rustdoc` first (into target/rustdoc-json); without it the JSON
already there is read.
"""
import json
import subprocess
import sys
from pathlib import Path

from crate_report import Finding, report, run

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target" / "rustdoc-json"

# The standard library is always allowed.
STD = {"std", "core", "alloc"}

# For each crate: the foreign crates its public API may name, and why.
ALLOWED = {
    "pod-identity-core": {
        "serde_core",  # Serialize/Deserialize implementations of the wire types.
        "url",  # endpoints are URLs.
    },
    "pod-identity-provider": {
        "aws_credential_types",  # Credentials, ProvideCredentials: what the provider is.
        "aws_smithy_runtime_api",  # ResolveIdentity, Identity, the SDK's client plumbing.
        "aws_smithy_async",  # TimeSource/SharedTimeSource and AsyncSleep, the SDK's clocks.
        "aws_smithy_types",  # ConfigBag and friends in SDK trait signatures.
        "aws_config",  # the default chain builder takes and extends aws-config's.
        "aws_types",  # SdkConfig, Region, os_shim_internal (Env, Fs) for injection.
        "pod_identity_core",  # the shared vocabulary.
        "reqwest",  # a caller may hand in its own reqwest Client.
    },
    "pod-identity-agent-lib": {
        "pod_identity_core",  # the shared vocabulary.
        "serde_core",  # Serialize/Deserialize implementations.
        "aws_credential_types",  # the sources' node credentials.
        "aws_types",  # SdkConfig given to the sources.
        "aws_smithy_async",  # TimeSource/SharedTimeSource, the SDK's clocks.
        "axum",  # CredentialsRouter::into_router returns an axum Router.
        "axum_core",  # axum's Body and Response (axum re-exports them), in the handler's answers.
        "bytes",  # IssuedCredentials::json_body: the rendered body, as http bodies carry it.
        "serde_json",  # feature `simulator` (test support): why an associations file did not parse.
        "http",  # request/response types in handler signatures.
        "prometheus_client",  # Metrics registers into a prometheus-client Registry.
        "tokio",  # listeners, join handles and cancellation of the server blocks.
        "tower_layer",  # tower's Layer (tower re-exports it): the rate limit layer.
        "tower_service",  # tower's Service (tower re-exports it): the rate limit service.
        "hyper",  # the server's connection types.
    },
}


def build(crate: str) -> None:
    subprocess.run(
        [
            "cargo", "+nightly", "rustdoc", "-q", "--locked", "-p", crate, "--all-features", "--lib",
            "--target-dir", str(TARGET), "--", "-Z", "unstable-options", "--output-format", "json",
        ],
        cwd=ROOT,
        check=True,
    )


def refs(value, found: set) -> None:
    """Every item id a type, path or trait bound in `value` names."""
    if isinstance(value, dict):
        if "resolved_path" in value and isinstance(value["resolved_path"], dict):
            found.add(value["resolved_path"]["id"])
        if "path" in value and "id" in value and isinstance(value.get("id"), int):
            found.add(value["id"])
        for key, inner in value.items():
            if key in ("items", "impls", "variants_stripped", "implementations"):
                continue
            refs(inner, found)
    elif isinstance(value, list):
        for inner in value:
            refs(inner, found)


def exposed(doc: dict) -> dict:
    """Foreign crate name -> the local items that expose it."""
    index, paths, external = doc["index"], doc["paths"], doc["external_crates"]
    result = {}
    for item in index.values():
        if item["crate_id"] != 0 or item["visibility"] not in ("public", "default"):
            continue
        inner = item["inner"]
        if "impl" in inner:
            impl = inner["impl"]
            if impl["is_synthetic"] or impl["blanket_impl"] is not None:
                continue
        if "use" in inner:
            continue
        found = set()
        refs(inner, found)
        owner = paths.get(str(item["id"]), {}).get("path") or [item.get("name") or "impl"]
        if "impl" in inner:
            impl = inner["impl"]
            target = impl["for"].get("resolved_path", {}).get("path", "?")
            trait = (impl.get("trait") or {}).get("path")
            owner = [f"impl {trait} for {target}" if trait else f"impl {target}"]
        for ref in found:
            entry = paths.get(str(ref))
            if entry is None or entry["crate_id"] == 0:
                continue
            crate = external.get(str(entry["crate_id"]), {}).get("name", "?")
            if crate in STD:
                continue
            result.setdefault(crate, set()).add("::".join(owner) + " -> " + "::".join(entry["path"]))
    return result


def check(crate: str) -> bool:
    if "--build" in sys.argv:
        build(crate)
    doc = json.loads((TARGET / "doc" / (crate.replace("-", "_") + ".json")).read_text())
    found = exposed(doc)
    findings = []
    for name in sorted(found):
        ok = name in ALLOWED[crate]
        shown = "--verbose" in sys.argv or not ok
        findings.append(Finding(
            f"{'ok  ' if ok else 'NOT ALLOWED'} {name} ({len(found[name])} uses)",
            failure=not ok,
            details=sorted(found[name])[:20] if shown else [],
        ))
    return report(crate, findings, "no foreign types in the public API")


if __name__ == "__main__":
    run(ALLOWED, check)
