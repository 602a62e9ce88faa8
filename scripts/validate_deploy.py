"""Renders RoomControl's kustomize base without kustomize, and checks it.

Usage: validate_deploy.py deploy/kubernetes

Run by scripts/validate-deploy with PyYAML from its tool directory. It
understands the one kustomize feature the base uses, `resources` listing
plain files, and refuses any other, so a new feature cannot slip past
unchecked. Then it checks what a schema cannot: every YAML file in the
directory is accounted for, resource names are unique, and the resources
refer to each other correctly.

Prints the files kubernetes-validate should check (the rendered resources
and the *.example.yaml files) on standard output, one per line, and what it
checked on standard error. Exits 1 on the first batch of problems.
"""

import sys
from pathlib import Path

import yaml

KUSTOMIZATION = "kustomization.yaml"
UNDERSTOOD_KEYS = {"apiVersion", "kind", "resources"}
EXAMPLE_SUFFIX = ".example.yaml"


def fail(problems):
    for problem in problems:
        print(f"validate_deploy.py: {problem}", file=sys.stderr)
    sys.exit(1)


def load_documents(path):
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except yaml.YAMLError as error:
        fail([f"{path}: not valid YAML: {error}"])
    for doc in documents:
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys():
            fail([f"{path}: every document needs apiVersion, kind and metadata"])
        if not doc["metadata"].get("name"):
            fail([f"{path}: a {doc['kind']} without metadata.name"])
    return documents


def read_kustomization(base):
    kustomization = yaml.safe_load((base / KUSTOMIZATION).read_text())
    problems = []
    if kustomization.get("kind") != "Kustomization":
        problems.append(f"{KUSTOMIZATION}: kind must be Kustomization")
    unknown = sorted(set(kustomization) - UNDERSTOOD_KEYS)
    if unknown:
        problems.append(
            f"{KUSTOMIZATION}: uses {', '.join(unknown)}, which this renderer does not understand; "
            "teach scripts/validate_deploy.py to render it before relying on it"
        )
    resources = kustomization.get("resources") or []
    if len(set(resources)) != len(resources):
        problems.append(f"{KUSTOMIZATION}: a resource is listed twice")
    for name in resources:
        path = base / name
        if "/" in name or "://" in name or not name.endswith((".yaml", ".yml")):
            problems.append(f"{KUSTOMIZATION}: resource {name!r} is not a YAML file in {base}")
        elif not path.is_file():
            problems.append(f"{KUSTOMIZATION}: resource {name} does not exist")
        elif name.endswith(EXAMPLE_SUFFIX):
            problems.append(f"{KUSTOMIZATION}: {name} is an example and must not be applied")
    on_disk = {p.name for p in base.iterdir() if p.suffix in (".yaml", ".yml")} - {KUSTOMIZATION}
    for name in sorted(on_disk - set(resources)):
        if not name.endswith(EXAMPLE_SUFFIX):
            problems.append(f"{name} is in {base} but not in {KUSTOMIZATION}: list it, or name it *{EXAMPLE_SUFFIX}")
    if problems:
        fail(problems)
    examples = sorted(on_disk - set(resources))
    return resources, examples


def matches(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def check_references(rendered, examples):
    """What the schemas cannot see: the resources must fit together."""
    problems = []
    by_kind = {}
    seen = set()
    for doc in rendered:
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        if key in seen:
            problems.append(f"two {doc['kind']} resources are named {doc['metadata']['name']}")
        seen.add(key)
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = by_kind.get("Deployment", [])
    configmaps = {doc["metadata"]["name"]: doc for doc in by_kind.get("ConfigMap", [])}
    example_secrets = {doc["metadata"]["name"]: doc for doc in examples if doc["kind"] == "Secret"}
    hpas = by_kind.get("HorizontalPodAutoscaler", [])

    def pod_labels(deployment):
        return deployment["spec"]["template"]["metadata"].get("labels", {})

    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        if not matches(deployment["spec"]["selector"].get("matchLabels"), pod_labels(deployment)):
            problems.append(f"Deployment {name}: its selector does not match its pod labels")
        for volume in pod.get("volumes", []):
            if "configMap" not in volume:
                continue
            configmap = configmaps.get(volume["configMap"]["name"])
            if configmap is None:
                problems.append(f"Deployment {name}: volume {volume['name']} needs a ConfigMap not in the base")
                continue
            for item in volume["configMap"].get("items", []):
                if item["key"] not in configmap.get("data", {}):
                    problems.append(
                        f"Deployment {name}: ConfigMap {configmap['metadata']['name']} has no {item['key']}"
                    )
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                # The real Secret is never in the repository; its example
                # documents the name and keys the Deployment reads.
                example = example_secrets.get(ref["name"])
                if example is None:
                    problems.append(f"Deployment {name}: Secret {ref['name']} has no *{EXAMPLE_SUFFIX} documenting it")
                elif ref["key"] not in {**example.get("data", {}), **example.get("stringData", {})}:
                    problems.append(f"Deployment {name}: the example Secret {ref['name']} has no key {ref['key']}")
        if hpas and "replicas" in deployment["spec"]:
            problems.append(
                f"Deployment {name}: sets replicas although an autoscaler manages it (kubectl apply would undo it)"
            )

    def selected(selector, what):
        found = [d for d in deployments if matches(selector, pod_labels(d))]
        if not found:
            problems.append(f"{what}: its selector matches no Deployment's pods")
        return found

    for service in by_kind.get("Service", []):
        for deployment in selected(service["spec"].get("selector"), f"Service {service['metadata']['name']}"):
            ports = [p for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if not any(target in (p.get("name"), p["containerPort"]) for p in ports):
                    problems.append(f"Service {service['metadata']['name']}: targetPort {target} is no container port")

    min_replicas = [hpa["spec"].get("minReplicas", 1) for hpa in hpas]
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        if not any(target["kind"] == "Deployment" and target["name"] == d["metadata"]["name"] for d in deployments):
            problems.append(
                f"HorizontalPodAutoscaler {hpa['metadata']['name']}: scales {target['name']}, not in the base"
            )
        if hpa["spec"].get("minReplicas", 1) < 2:
            problems.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']}: minReplicas must be 2 or more")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        selected(pdb["spec"]["selector"].get("matchLabels"), f"PodDisruptionBudget {pdb['metadata']['name']}")
        minimum = pdb["spec"].get("minAvailable")
        if isinstance(minimum, int) and min_replicas and minimum >= min(min_replicas):
            problems.append(
                f"PodDisruptionBudget {pdb['metadata']['name']}: minAvailable {minimum} would block every drain"
            )
    if problems:
        fail(problems)


def main():
    if len(sys.argv) != 2:
        fail(["usage: validate_deploy.py <kustomize base directory>"])
    base = Path(sys.argv[1])
    resources, examples = read_kustomization(base)
    rendered = [doc for name in resources for doc in load_documents(base / name)]
    example_docs = [doc for name in examples for doc in load_documents(base / name)]
    check_references(rendered, example_docs)
    names = ", ".join(sorted(doc["kind"] + "/" + doc["metadata"]["name"] for doc in rendered))
    print(f"{base}/{KUSTOMIZATION} renders {len(rendered)} resources: {names}", file=sys.stderr)
    print(f"examples, validated but never applied: {', '.join(examples) or 'none'}", file=sys.stderr)
    print("selectors, ports, ConfigMap, Secret keys and autoscaler target all refer correctly", file=sys.stderr)
    for name in resources + examples:
        print(base / name)


if __name__ == "__main__":
    main()
