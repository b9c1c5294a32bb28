"""deploy/ and the Dockerfile, checked offline.

- The kustomize base is rendered by `kubectl kustomize` when kubectl is installed, and always by
  `render_base` below, a tiny renderer of the few kustomize features the base uses (resources,
  namespace, one configMapGenerator without name hash). It refuses anything else, and when kubectl
  is present a test checks that both renderings are identical, so the tiny renderer stays faithful.
- Built-in objects are validated against the Kubernetes OpenAPI schemas shipped offline by the PyPI
  package kubernetes-validate (strict: unknown fields are errors).
- CRD objects (prometheus-operator, Istio, SMI, Gateway API) are validated against JSON schemas
  written here from each project's documented fields, also closed to unknown fields.
- The Dockerfile is checked without an engine: COPY sources exist, the entry point is the console
  script, the user is numeric and not root, and the final stage has no build tools.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLES = DEPLOY / "examples"
NAMESPACE = "orion"

sys.path.insert(0, str(DEPLOY))
import sync_rules  # noqa: E402 - deploy/sync_rules.py, the PrometheusRule generator

# --------------------------------------------------------------------------------------------------
# The tiny kustomize renderer

_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions",
                       "images", "patches"}
_CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}


class UnsupportedKustomization(AssertionError):
    pass


def _unsupported(what: str) -> UnsupportedKustomization:
    return UnsupportedKustomization(
        f"a kustomization uses {what}, which tests/test_deploy.py's renderer does not reproduce; "
        "keep deploy/ and overlays/ plain or extend render_base (and check it against kubectl kustomize)"
    )


def _generate(root: Path, k: dict[str, Any]) -> list[dict[str, Any]]:
    options = k.get("generatorOptions", {})
    if set(options) - {"disableNameSuffixHash", "labels"} or (k.get("configMapGenerator") and
                                                             options.get("disableNameSuffixHash") is not True):
        raise _unsupported("generatorOptions other than disableNameSuffixHash: true and labels")
    objects = []
    for gen in k.get("configMapGenerator", []):
        if set(gen) - {"name", "files"}:
            raise _unsupported(f"configMapGenerator fields {sorted(set(gen) - {'name', 'files'})}")
        data = {}
        for entry in gen["files"]:
            key, _, src = entry.rpartition("=")
            data[key or Path(src).name] = (root / src).read_text()
        meta: dict[str, Any] = {"name": gen["name"]}
        if options.get("labels"):
            meta["labels"] = dict(options["labels"])
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return objects


def _pointer(doc: Any, path: str) -> tuple[Any, str | int]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    last = parts[-1]
    return doc, (len(doc) if last == "-" else int(last)) if isinstance(doc, list) else last


def _json6902(obj: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        parent, key = _pointer(obj, op["path"])
        if op["op"] == "add" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(op["value"]))
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and (key not in parent if isinstance(parent, dict) else key >= len(parent)):
                raise AssertionError(f"replace of the missing {op['path']}")
            parent[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[key]
        else:
            raise _unsupported(f"the JSON patch op {op['op']!r}")


def _patch(root: Path, objects: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    if set(entry) - {"target", "patch", "path"} or set(entry.get("target", {})) - {"kind", "name"}:
        raise _unsupported(f"the patch {entry}")
    body = yaml.safe_load(entry["patch"] if "patch" in entry else (root / entry["path"]).read_text())
    if isinstance(body, dict):  # a strategic merge patch: only `$patch: delete` of a whole object
        if body.get("$patch") != "delete":
            raise _unsupported("strategic merge patches other than $patch: delete")
        gone = (body["kind"], body["metadata"]["name"])
        assert any(_key(o) == gone for o in objects), f"$patch: delete of the missing {gone}"
        return [o for o in objects if _key(o) != gone]
    target = entry["target"]
    hits = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
    assert hits, f"the patch target {target} matches nothing"
    for obj in hits:
        _json6902(obj, body)
    return objects


def _set_namespace(objects: list[dict[str, Any]], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace  # kustomize renames the Namespace it is given
            continue
        if obj["kind"] in _CLUSTER_SCOPED:
            if "namespace" in obj["metadata"]:
                raise _unsupported(f"the cluster-scoped {obj['kind']} {obj['metadata']['name']} with a namespace")
            continue  # kustomize leaves a cluster-scoped object without a namespace
        old = obj["metadata"].get("namespace")
        obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []) if obj["kind"] == "RoleBinding" else []:
            if subject.get("kind") == "ServiceAccount":
                if subject.get("namespace", old) != old:
                    # kustomize v2 overrides it, v5 keeps it: leave it out and let kustomize fill it
                    raise _unsupported("a ServiceAccount subject with an explicit namespace")
                subject["namespace"] = namespace


def _set_images(objects: list[dict[str, Any]], images: list[dict[str, Any]]) -> None:
    for image in images:
        if set(image) - {"name", "newName", "newTag"}:
            raise _unsupported(f"images fields {sorted(set(image) - {'name', 'newName', 'newTag'})}")
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {}) if obj["kind"] == "Deployment" else {}
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            for image in images:
                if image["name"] == name:
                    name, tag = image.get("newName", name), image.get("newTag", tag)
            container["image"] = f"{name}:{tag}" if tag else name


def render_base(root: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize root` outputs, for the features deploy/ and overlays/ use (and nothing else)."""
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    if set(k) - _KUSTOMIZATION_KEYS:
        raise _unsupported(f"the fields {sorted(set(k) - _KUSTOMIZATION_KEYS)}")
    objects: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (root / res).resolve()
        if path.is_dir():
            objects.extend(render_base(path))
        elif path.is_file():
            objects.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        else:
            raise _unsupported(f"the resource {res!r}, which is neither a file nor a kustomization")
    objects.extend(_generate(root, k))
    for entry in k.get("patches", []):
        objects = _patch(root, objects, entry)
    if k.get("namespace"):
        _set_namespace(objects, k["namespace"])
    _set_images(objects, k.get("images", []))
    return objects


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    objects = render_base(DEPLOY)
    keyed = {_key(o): o for o in objects}
    assert len(keyed) == len(objects), "two objects share a kind and name"
    return keyed


def _one(rendered: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for (k, _), o in rendered.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_renderer_matches_kubectl_kustomize(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian: kubernetes-client); the tiny renderer alone is used")
    proc = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = {_key(o): o for o in yaml.safe_load_all(proc.stdout) if o}
    assert theirs == rendered


def test_renderer_refuses_what_it_does_not_reproduce(tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(DEPLOY, base)
    k = yaml.safe_load((base / "kustomization.yaml").read_text())
    k["commonLabels"] = {"team": "platform"}
    (base / "kustomization.yaml").write_text(yaml.safe_dump(k))
    with pytest.raises(UnsupportedKustomization, match="commonLabels"):
        render_base(base)


def test_base_contents(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = sorted(k for k, _ in rendered)
    assert kinds == sorted([
        "AlertmanagerConfig", "ConfigMap", "ConfigMap", "CustomResourceDefinition", "Deployment", "Namespace",
        "NetworkPolicy", "PodDisruptionBudget", "PrometheusRule", "Role", "RoleBinding", "Service", "ServiceAccount",
        "ServiceMonitor",
    ])
    assert _one(rendered, "Namespace")["metadata"]["name"] == NAMESPACE
    for obj in rendered.values():
        if obj["kind"] in _CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], _key(obj)
            continue
        assert obj["metadata"]["namespace"] == NAMESPACE, _key(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "canaryd", _key(obj)


# --------------------------------------------------------------------------------------------------
# Built-in objects: the Kubernetes schemas, offline

_BUILTIN_GROUPS = {"v1", "apps", "rbac.authorization.k8s.io", "policy", "coordination.k8s.io", "batch",
                   "apiextensions.k8s.io", "networking.k8s.io"}  # the Canary CRD is checked against Kubernetes' own CRD schema


def _is_builtin(obj: dict[str, Any]) -> bool:
    api = obj["apiVersion"]
    return (api.split("/")[0] if "/" in api else api) in _BUILTIN_GROUPS


def test_builtin_objects_validate_against_kubernetes_schemas(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a test dependency)")
    versions = ["1.27", kv.utils.latest_version()]
    builtins = [o for o in rendered.values() if _is_builtin(o)]
    assert len(builtins) == 11
    _validate_builtins(kv, builtins, versions)


def _validate_builtins(kv: Any, builtins: list[dict[str, Any]], versions: list[str]) -> None:
    for obj in builtins:
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(map(str, e.path))
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}: {path}: {e.message}")


def test_kubernetes_validation_is_not_vacuous(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a test dependency)")
    bad = copy.deepcopy(_one(rendered, "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kv.ValidationError, match="paht"):
        kv.validate(bad, "1.27", strict=True)


# --------------------------------------------------------------------------------------------------
# CRD objects: schemas written from each project's documented fields, closed to unknown ones

def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


def _arr(items: dict[str, Any], min_items: int = 0, max_items: int | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "array", "items": items, "minItems": min_items}
    if max_items is not None:
        s["maxItems"] = max_items
    return s


STR = {"type": "string"}
NONEMPTY = {"type": "string", "minLength": 1}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
DNS1123 = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
           "maxLength": 253}
# prometheus-operator's Duration, as in its CRDs
PROM_DURATION = {"type": "string",
                 "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
# Istio (protobuf Duration as a string)
ISTIO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"}
METADATA = _obj({"name": DNS1123, "namespace": DNS1123, "labels": STRMAP, "annotations": STRMAP}, ("name",))
SECRET_KEY = _obj({"name": NONEMPTY, "key": NONEMPTY, "optional": BOOL}, ("key",))
LABEL_SELECTOR = _obj({"matchLabels": STRMAP, "matchExpressions": _arr(_obj(
    {"key": STR, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]}, "values": _arr(STR)},
    ("key", "operator")))})


def _resource(api_versions: list[str], kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _obj({"apiVersion": {"enum": api_versions}, "kind": {"const": kind}, "metadata": METADATA, "spec": spec},
                ("apiVersion", "kind", "metadata", "spec"))


# monitoring.coreos.com/v1 ServiceMonitor
SERVICE_MONITOR = _resource(["monitoring.coreos.com/v1"], "ServiceMonitor", _obj({
    "selector": LABEL_SELECTOR,
    "namespaceSelector": _obj({"any": BOOL, "matchNames": _arr(STR)}),
    "jobLabel": STR, "targetLabels": _arr(STR), "podTargetLabels": _arr(STR),
    "sampleLimit": INT, "targetLimit": INT,
    "endpoints": _arr(_obj({
        "port": STR, "targetPort": {"type": ["string", "integer"]}, "path": STR,
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {"type": "object"}, "interval": PROM_DURATION, "scrapeTimeout": PROM_DURATION,
        "honorLabels": BOOL, "honorTimestamps": BOOL, "followRedirects": BOOL, "enableHttp2": BOOL,
        "relabelings": _arr({"type": "object"}), "metricRelabelings": _arr({"type": "object"}),
        "bearerTokenSecret": SECRET_KEY, "tlsConfig": {"type": "object"},
        "authorization": _obj({"type": STR, "credentials": SECRET_KEY}),
    }), min_items=1),
}, ("selector", "endpoints")))

# monitoring.coreos.com/v1 PrometheusRule
PROMETHEUS_RULE = _resource(["monitoring.coreos.com/v1"], "PrometheusRule", _obj({
    "groups": _arr(_obj({
        "name": NONEMPTY, "interval": PROM_DURATION, "query_offset": PROM_DURATION, "limit": INT,
        "partial_response_strategy": STR, "labels": STRMAP,
        "rules": _arr({
            "oneOf": [
                _obj({"record": NONEMPTY, "expr": {"type": ["string", "integer"]}, "labels": STRMAP},
                     ("record", "expr")),
                _obj({"alert": NONEMPTY, "expr": {"type": ["string", "integer"]}, "for": PROM_DURATION,
                      "keep_firing_for": PROM_DURATION, "labels": STRMAP, "annotations": STRMAP},
                     ("alert", "expr")),
            ]
        }, min_items=1),
    }, ("name", "rules")), min_items=1),
}, ("groups",)))

# monitoring.coreos.com/v1alpha1 AlertmanagerConfig
_MATCHER = _obj({"name": NONEMPTY, "value": STR, "matchType": {"enum": ["=", "!=", "=~", "!~"]}, "regex": BOOL},
                ("name",))
ALERTMANAGER_CONFIG = _resource(["monitoring.coreos.com/v1alpha1"], "AlertmanagerConfig", _obj({
    "route": _obj({
        "receiver": STR, "groupBy": _arr(STR), "groupWait": PROM_DURATION, "groupInterval": PROM_DURATION,
        "repeatInterval": PROM_DURATION, "matchers": _arr(_MATCHER), "continue": BOOL,
        "routes": _arr({"type": "object"}), "muteTimeIntervals": _arr(STR), "activeTimeIntervals": _arr(STR),
    }),
    "receivers": _arr(_obj({
        "name": NONEMPTY,
        "webhookConfigs": _arr(_obj({
            "url": {"type": "string", "pattern": r"^https?://.+$"}, "urlSecret": SECRET_KEY,
            "sendResolved": BOOL, "maxAlerts": {"type": "integer", "minimum": 0}, "timeout": PROM_DURATION,
            "httpConfig": _obj({
                "authorization": _obj({"type": STR, "credentials": SECRET_KEY}),
                "bearerTokenSecret": SECRET_KEY, "basicAuth": {"type": "object"}, "oauth2": {"type": "object"},
                "tlsConfig": {"type": "object"}, "proxyURL": STR, "followRedirects": BOOL, "enableHttp2": BOOL,
            }),
        })),
    }, ("name",))),
    "inhibitRules": _arr({"type": "object"}), "muteTimeIntervals": _arr({"type": "object"}),
}))

# networking.istio.io VirtualService / DestinationRule (v1beta1 and v1 share the fields)
_ISTIO_API = ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]
_STRING_MATCH = {"type": "object", "minProperties": 1, "maxProperties": 1,
                 "properties": {"exact": STR, "prefix": STR, "regex": STR}, "additionalProperties": False}
_DESTINATION = _obj({"host": NONEMPTY, "subset": STR, "port": _obj({"number": INT})}, ("host",))
VIRTUAL_SERVICE = _resource(_ISTIO_API, "VirtualService", _obj({
    "hosts": _arr(STR), "gateways": _arr(STR), "exportTo": _arr(STR),
    "http": _arr(_obj({
        "name": STR,
        "match": _arr(_obj({
            "name": STR, "uri": _STRING_MATCH, "scheme": _STRING_MATCH, "method": _STRING_MATCH,
            "authority": _STRING_MATCH, "headers": {"type": "object", "additionalProperties": _STRING_MATCH},
            "queryParams": {"type": "object", "additionalProperties": _STRING_MATCH},
            "withoutHeaders": {"type": "object", "additionalProperties": _STRING_MATCH},
            "port": INT, "sourceLabels": STRMAP, "sourceNamespace": STR, "gateways": _arr(STR),
            "ignoreUriCase": BOOL,
        })),
        "route": _arr(_obj({"destination": _DESTINATION, "weight": {"type": "integer", "minimum": 0},
                            "headers": {"type": "object"}}, ("destination",)), min_items=1),
        "timeout": ISTIO_DURATION, "retries": {"type": "object"}, "fault": {"type": "object"},
        "mirror": _DESTINATION, "corsPolicy": {"type": "object"}, "headers": {"type": "object"},
        "rewrite": {"type": "object"},
    }, ("route",))),
}, ("hosts",)))
DESTINATION_RULE = _resource(_ISTIO_API, "DestinationRule", _obj({
    "host": NONEMPTY, "exportTo": _arr(STR), "workloadSelector": {"type": "object"},
    "trafficPolicy": _obj({
        "loadBalancer": {"type": "object"}, "connectionPool": {"type": "object"}, "tls": {"type": "object"},
        "portLevelSettings": _arr({"type": "object"}),
        "outlierDetection": _obj({
            "consecutiveErrors": INT, "consecutive5xxErrors": INT, "consecutiveGatewayErrors": INT,
            "consecutiveLocalOriginFailures": INT, "splitExternalLocalOriginErrors": BOOL,
            "interval": ISTIO_DURATION, "baseEjectionTime": ISTIO_DURATION,
            "maxEjectionPercent": {"type": "integer", "minimum": 0, "maximum": 100},
            "minHealthPercent": {"type": "integer", "minimum": 0, "maximum": 100},
        }),
    }),
    "subsets": _arr(_obj({"name": NONEMPTY, "labels": STRMAP, "trafficPolicy": {"type": "object"}}, ("name",))),
}, ("host",)))

# split.smi-spec.io TrafficSplit: integer weights from v1alpha2 on (v1alpha1: quantities such as "950m")
TRAFFIC_SPLIT = _resource(
    ["split.smi-spec.io/v1alpha2", "split.smi-spec.io/v1alpha3", "split.smi-spec.io/v1alpha4"], "TrafficSplit",
    _obj({"service": NONEMPTY, "matches": _arr({"type": "object"}),
          "backends": _arr(_obj({"service": NONEMPTY, "weight": {"type": "integer", "minimum": 0}},
                                ("service", "weight")), min_items=1)}, ("service", "backends")))

# gateway.networking.k8s.io HTTPRoute (v1, v1beta1)
_GW_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_HEADER_MATCH = _obj({"type": {"enum": ["Exact", "RegularExpression"]}, "name": _GW_NAME, "value": STR},
                     ("name", "value"))
HTTP_ROUTE = _resource(["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"], "HTTPRoute", _obj({
    "parentRefs": _arr(_obj({"group": STR, "kind": STR, "namespace": STR, "name": _GW_NAME, "sectionName": STR,
                             "port": {"type": "integer", "minimum": 1, "maximum": 65535}}, ("name",)),
                       max_items=32),
    "hostnames": _arr(STR, max_items=16),
    "rules": _arr(_obj({
        "name": STR,
        "matches": _arr(_obj({
            "path": _obj({"type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]}, "value": STR}),
            "headers": _arr(_HEADER_MATCH, max_items=16),
            "queryParams": _arr({"type": "object"}, max_items=16),
            "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]},
        }), max_items=64),
        "filters": _arr({"type": "object"}, max_items=16),
        "backendRefs": _arr(_obj({
            "group": STR, "kind": STR, "name": _GW_NAME, "namespace": STR,
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
            "filters": _arr({"type": "object"}),
        }, ("name",)), max_items=16),
        "timeouts": _obj({"request": STR, "backendRequest": STR}),
    }), max_items=16),
}))

CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": SERVICE_MONITOR,
    "PrometheusRule": PROMETHEUS_RULE,
    "AlertmanagerConfig": ALERTMANAGER_CONFIG,
    "VirtualService": VIRTUAL_SERVICE,
    "DestinationRule": DESTINATION_RULE,
    "TrafficSplit": TRAFFIC_SPLIT,
    "HTTPRoute": HTTP_ROUTE,
}


def _validate_crd(obj: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with kubernetes-validate")
    schema = CRD_SCHEMAS.get(obj["kind"])
    assert schema is not None, f"no schema for {obj['kind']} ({obj['apiVersion']}); add one to CRD_SCHEMAS"
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}"
                                 for e in errors)


def _examples() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[doc["kind"]] = doc
    return out


def test_crd_objects_match_their_documented_fields(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    crds = [o for o in rendered.values() if not _is_builtin(o)]
    assert {o["kind"] for o in crds} == {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
    for obj in crds + list(_examples().values()):
        _validate_crd(obj)


def test_crd_schemas_catch_a_misspelt_field() -> None:
    vs = copy.deepcopy(_examples()["VirtualService"])
    vs["spec"]["http"][1]["route"][0]["wieght"] = 95
    with pytest.raises(AssertionError, match="wieght"):
        _validate_crd(vs)
    am = copy.deepcopy(yaml.safe_load((DEPLOY / "alertmanagerconfig.yaml").read_text()))
    am["spec"]["receivers"][0]["webhookConfigs"][0]["send_resolved"] = True  # the alertmanager.yml spelling
    with pytest.raises(AssertionError, match="send_resolved"):
        _validate_crd(am)


# --------------------------------------------------------------------------------------------------
# What the objects must say, and agree on

def _config(rendered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(rendered[("ConfigMap", "canaryd-config")]["data"]["config.yaml"])


def _container(rendered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _mounted_file(rendered: dict[tuple[str, str], dict[str, Any]], path: str) -> tuple[dict[str, Any], str]:
    """The volume behind a file path in the container, and the key of that file in the volume."""
    pod = _one(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in _container(rendered)["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = volumes[mount["name"]]
            rel = path[len(prefix):]
            source = volume.get("configMap") or volume.get("secret") or {}
            items = {i["path"]: i["key"] for i in source.get("items", [])}
            return volume, items.get(rel, rel)
    raise AssertionError(f"{path} is not under any volume mount")


def test_deployment_is_hardened_and_probed(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = _one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(rendered)
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "canaryd"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"ghcr.io/canaryd/canaryd:{version}"


def test_config_is_mounted_and_valid(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    container = _container(rendered)
    args = container["args"]
    assert args[:2] == ["run", "--config"], args
    volume, key = _mounted_file(rendered, args[2])
    assert volume["configMap"]["name"] == "canaryd-config"
    assert key in rendered[("ConfigMap", "canaryd-config")]["data"]
    cfg = _config(rendered)
    host, _, port = cfg["server"]["listen"].rpartition(":")
    assert host == "0.0.0.0" and int(port) == 8080, "must listen on the pod IP, on the probed port"
    le = cfg["kubernetes"]["leader_election"]
    assert cfg["kubernetes"]["enabled"] is True and le["enabled"] is True
    assert le["namespace"] == NAMESPACE, "the Lease lives in canaryd's own namespace (its Role is namespaced)"
    assert {c["namespace"] for c in cfg["canaries"]} == {NAMESPACE}, "a namespaced Role reaches only its namespace"
    config_mod = pytest.importorskip("canaryd.config")
    config_mod.parse_config(cfg, "deploy/configmap.yaml")  # raises ConfigError with every problem


def test_tokens_come_from_the_secret(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    cfg = _config(rendered)
    secret_keys = set()
    for setting in ("webhook_token_file", "api_token_file"):
        volume, key = _mounted_file(rendered, cfg["server"][setting])
        assert volume["secret"]["secretName"] == "canaryd-tokens", setting
        secret_keys.add(key)
    assert secret_keys == {"webhook-token", "api-token"}
    receiver = _one(rendered, "AlertmanagerConfig")["spec"]["receivers"][0]["webhookConfigs"][0]
    credentials = receiver["httpConfig"]["authorization"]
    assert credentials["type"] == "Bearer"
    assert credentials["credentials"] == {"name": "canaryd-tokens", "key": "webhook-token"}


def test_rbac_is_exactly_what_canaryd_uses(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    role = _one(rendered, "Role")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == {
        ("networking.istio.io", "virtualservices"): {"get", "list", "watch", "patch", "update"},
        ("split.smi-spec.io", "trafficsplits"): {"get", "list", "watch", "patch", "update"},
        ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "patch", "update"},
        ("apps", "deployments"): {"get", "list", "watch", "patch"},
        ("apps", "deployments/scale"): {"get", "patch", "update"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
        ("canaryd.io", "canaries"): {"get", "list", "watch", "patch"},
        ("canaryd.io", "canaries/status"): {"patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
        ("", "pods"): {"get", "list", "watch"},
        ("batch", "jobs"): {"create", "get"},
    }
    lease_rules = [r for r in role["rules"] if "leases" in r["resources"] and {"get", "update"} & set(r["verbs"])]
    lease = _config(rendered)["kubernetes"]["leader_election"]["lease"]
    assert all(r.get("resourceNames") == [lease] for r in lease_rules), "get/update only on canaryd's own Lease"
    binding = _one(rendered, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "canaryd", "namespace": NAMESPACE}]
    assert not any(k in {"ClusterRole", "ClusterRoleBinding"} for k, _ in rendered)


def test_service_and_monitor_select_the_pods(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod_labels = _one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = _one(rendered, "Service")
    assert service["metadata"]["name"] == "canaryd", "rules/canaryd-alerts.yml expects job=\"canaryd\""
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8080 and port["targetPort"] == "http"
    monitor = _one(rendered, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True, "canaryd's per-canary metrics carry their own namespace label"
    pdb = _one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_alertmanager_receiver_reaches_the_webhook(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    spec = _one(rendered, "AlertmanagerConfig")["spec"]
    (receiver,) = spec["receivers"]
    assert spec["route"]["receiver"] == receiver["name"]
    (webhook,) = receiver["webhookConfigs"]
    assert webhook["url"] == f"http://canaryd.{NAMESPACE}.svc:8080/webhooks/alertmanager"
    assert webhook["sendResolved"] is True
    # every alert canaryd has an action for is routed to it
    (matcher,) = spec["route"]["matchers"]
    assert matcher["name"] == "alertname" and matcher["matchType"] == "=~"
    routed = set(matcher["value"].split("|"))
    assert routed == {a["alertname"] for a in _config(rendered)["alerts"]}
    alert_names = {r["alert"] for g in sync_rules.rule_groups() for r in g["rules"] if "alert" in r}
    assert routed <= alert_names
    assert {"namespace", "canary"} <= set(spec["route"]["groupBy"])


def test_prometheusrule_is_rules_dir(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert _one(rendered, "PrometheusRule")["spec"]["groups"] == sync_rules.rule_groups()
    assert (DEPLOY / "prometheusrule.yaml").read_text() == sync_rules.render(), (
        "deploy/prometheusrule.yaml is out of date: run python deploy/sync_rules.py"
    )


def test_grafana_dashboard_configmap_is_the_json(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    cm = rendered[("ConfigMap", "canaryd-grafana-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"canaryd.json": (DEPLOY / "grafana" / "canaryd.json").read_text()}
    json.loads(cm["data"]["canaryd.json"])


# --------------------------------------------------------------------------------------------------
# Example routes

def _istio_arm(route: dict[str, Any]) -> str:
    return route["destination"].get("subset", "")


def test_istio_examples() -> None:
    ex = _examples()
    vs, dr = ex["VirtualService"], ex["DestinationRule"]
    http = vs["spec"]["http"]
    first = http[0]
    assert first["match"] == [{"headers": {"x-canary": {"exact": "true"}}}], "the x-canary header route comes first"
    assert [_istio_arm(r) for r in first["route"]] == ["canary"]
    weighted = [h for h in http if {_istio_arm(r) for r in h["route"]} == {"stable", "canary"}]
    assert len(weighted) == 1 and "match" not in weighted[0]
    weights = {_istio_arm(r): r["weight"] for r in weighted[0]["route"]}
    assert weights == {"stable": 100, "canary": 0}, "applied idle: no traffic to the canary before a rollout"
    assert {s["name"] for s in dr["spec"]["subsets"]} == {"stable", "canary"}
    assert dr["spec"]["host"] == vs["spec"]["hosts"][0]
    outlier = dr["spec"]["trafficPolicy"]["outlierDetection"]
    # the circuit breaker (consecutiveErrors: 5 in older manifests, consecutive5xxErrors in Istio today)
    assert outlier == {"consecutive5xxErrors": 5, "interval": "30s", "baseEjectionTime": "30s", "maxEjectionPercent": 50}
    # the deployed config's canary routes through this VirtualService
    (canary,) = _config({("ConfigMap", "canaryd-config"): yaml.safe_load(
        (DEPLOY / "configmap.yaml").read_text())})["canaries"]
    assert canary["route"] == vs["metadata"]["name"]


def test_smi_example() -> None:
    split = _examples()["TrafficSplit"]["spec"]
    assert split["service"] == "auth-service"
    assert [(b["service"], b["weight"]) for b in split["backends"]] == [
        ("auth-service-stable", 1000), ("auth-service-canary", 0)]


def test_gateway_api_example() -> None:
    rules = _examples()["HTTPRoute"]["spec"]["rules"]
    header = rules[0]
    assert header["matches"] == [{"headers": [{"type": "Exact", "name": "x-canary", "value": "true"}]}]
    assert [b["name"] for b in header["backendRefs"]] == ["auth-service-canary"]
    weighted = {b["name"]: b["weight"] for b in rules[1]["backendRefs"]}
    assert weighted == {"auth-service-stable": 1000, "auth-service-canary": 0}


# --------------------------------------------------------------------------------------------------
# Dockerfile, without a container engine

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment line inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continuation"
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(ROOT / "Dockerfile"):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions in .dockerignore are not modelled here"
        pat = pattern.rstrip("/")
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/")) for p in prefixes):
            return True
    return False


def test_dockerfile_copies_only_existing_files() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    copies = 0
    for stage in _stages():
        for word, args in stage:
            if word not in ("COPY", "ADD"):
                continue
            tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
            flags = [t for t in tokens if t.startswith("--")]
            if any(f.startswith("--from=") for f in flags):
                continue  # from another stage, not the build context
            sources = [t for t in tokens if not t.startswith("--")][:-1]
            assert sources, f"{word} {args}: no source"
            for src in sources:
                matches = list(ROOT.glob(src.rstrip("/"))) if any(c in src for c in "*?[") else [ROOT / src]
                assert matches and all(m.exists() for m in matches), f"{word} {src}: not in the repository"
                assert not _dockerignored(src.rstrip("/"), patterns), f"{word} {src}: excluded by .dockerignore"
                copies += 1
    assert copies >= 2


def test_dockerfile_runs_the_console_script_as_non_root() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    final = stages[-1]
    by_word: dict[str, list[str]] = {}
    for word, args in final:
        by_word.setdefault(word, []).append(args)
    entrypoint = json.loads(by_word["ENTRYPOINT"][-1])
    assert entrypoint == ["canaryd"]
    assert pyproject["project"]["scripts"]["canaryd"] == "canaryd.cli:main"
    assert json.loads(by_word["CMD"][-1]) == ["run", "--config", "/etc/canaryd/config.yaml"]
    user = by_word["USER"][-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric and not root, so runAsNonRoot can check it"
    deployment = yaml.safe_load((DEPLOY / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["containers"][0]["args"] == json.loads(by_word["CMD"][-1])
    healthcheck = by_word["HEALTHCHECK"][-1]
    assert "/healthz" in healthcheck and "python" in healthcheck
    assert not re.search(r"\b(curl|wget)\b", healthcheck)


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    stages = _stages()
    python_minor = re.search(r">=\s*(3\.\d+)", tomllib.loads((ROOT / "pyproject.toml").read_text())
                             ["project"]["requires-python"]).group(1)
    for stage in stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)?|python:3\.\d+-slim(-\w+)?", image), image
    default = [a for w, a in _instructions(ROOT / "Dockerfile") if w == "ARG" and a.startswith("PYTHON_VERSION=")]
    assert default == [f"PYTHON_VERSION={python_minor}"]
    builder, final = stages[0], stages[-1]
    assert any(w == "RUN" and "pip wheel" in a for w, a in builder)
    final_text = "\n".join(f"{w} {a}" for w, a in final)
    for tool in ("build-essential", "gcc", "g++", "make", "python3-dev", "libc6-dev", "apt-get install"):
        assert not re.search(rf"(^|[\s/]){re.escape(tool)}(\s|$)", final_text), f"final stage mentions {tool}"
    install = [a for w, a in final if w == "RUN" and "pip install" in a]
    assert install and all("--no-index" in a for a in install), "the runtime installs only the builder's wheels"


def test_dockerfile_caches_dependencies_and_needs_no_compiler() -> None:
    builder = _stages()[0]
    text = "\n".join(f"{w} {a}" for w, a in builder)
    for tool in ("build-essential", "gcc", "g++", "python3-dev", "apt-get install"):
        assert tool not in text, f"the builder installs {tool}: every dependency has a wheel"
    words = [(w, a) for w, a in builder if w in ("COPY", "RUN")]
    dep_run = next(i for i, (w, a) in enumerate(words) if w == "RUN" and "-r requirements.txt" in a)
    source_copy = next(i for i, (w, a) in enumerate(words) if w == "COPY" and "daemon/" in a)
    assert dep_run < source_copy, "dependencies are installed before the source is copied (a cached layer)"
    assert [a for w, a in words[:dep_run] if w == "COPY"] == ["pyproject.toml ./"], "only pyproject.toml before"
    assert "--only-binary=:all:" in words[dep_run][1], "a dependency without a wheel fails the build, not compiles"
    assert any(w == "RUN" and "--no-deps" in a for w, a in words[source_copy:])


def test_make_image_needs_docker() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    proc = subprocess.run([make, "-n", "image"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "docker build" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([make, "image", "DOCKER=canaryd-no-such-docker"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0 and "docker" in proc.stderr.lower(), proc.stdout + proc.stderr


def test_plain_alertmanager_example() -> None:
    """deploy/examples/alertmanager.yml: the same receiver for Alertmanager without the operator."""
    path = EXAMPLES / "alertmanager.yml"
    cfg = yaml.safe_load(path.read_text())
    (route,) = [r for r in cfg["route"]["routes"] if r["receiver"] == "canaryd"]
    assert route["continue"] is True
    operator = yaml.safe_load((DEPLOY / "alertmanagerconfig.yaml").read_text())["spec"]
    alertnames = operator["route"]["matchers"][0]["value"]
    assert f'alertname =~ "{alertnames}"' in route["matchers"]
    (webhook,) = next(r for r in cfg["receivers"] if r["name"] == "canaryd")["webhook_configs"]
    assert webhook["url"] == operator["receivers"][0]["webhookConfigs"][0]["url"]
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian package prometheus-alertmanager)")
    proc = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={path}",
         "alertname=CanaryHighErrorRate", f"namespace={NAMESPACE}", "canary=auth-service"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["canaryd"], proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------------
# The base's image, NetworkPolicy, and the overlays in overlays/ (beside deploy/: kustomize refuses an
# overlay inside its own base)

OVERLAYS = ROOT / "overlays"


def _render_overlay(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    objects = render_base(OVERLAYS / name)
    keyed = {_key(o): o for o in objects}
    assert len(keyed) == len(objects), "two objects share a kind and name"
    return keyed


def test_image_is_set_in_the_kustomization(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    (image,) = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["images"]
    assert _container(rendered)["image"] == f"{image['newName']}:{image['newTag']}"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image["newTag"] == version


def test_network_policy_admits_the_port_and_lets_canaryd_out(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    spec = _one(rendered, "NetworkPolicy")["spec"]
    pod_labels = _one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = spec["ingress"]
    assert ingress["from"] == [{"namespaceSelector": {}}], "webhooks, the API and scrapes come from anywhere in-cluster"
    assert [p["port"] for p in ingress["ports"]] == [_one(rendered, "Service")["spec"]["ports"][0]["port"]]
    egress = {(p["port"], p.get("protocol", "TCP")) for rule in spec["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")} <= egress, "DNS and the API server"
    prometheus = re.search(r":(\d+)", _config(rendered)["prometheus"]["url"].split("//")[1])
    assert (int(prometheus.group(1)), "TCP") in egress, "the configured Prometheus"


@pytest.mark.parametrize("overlay", ["other-namespace", "no-operator"])
def test_overlay_renders_like_kubectl_and_validates(overlay: str) -> None:
    objects = _render_overlay(overlay)
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (a test dependency)")
    _validate_builtins(kv, [o for o in objects.values() if _is_builtin(o)], [kv.utils.latest_version()])
    for obj in objects.values():
        if not _is_builtin(obj):
            _validate_crd(obj)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the tiny renderer alone is used")
    proc = subprocess.run([kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {_key(o): o for o in yaml.safe_load_all(proc.stdout) if o} == objects


def test_other_namespace_overlay_moves_everything() -> None:
    base = render_base(DEPLOY)
    objects = _render_overlay("other-namespace")
    namespace = yaml.safe_load((OVERLAYS / "other-namespace" / "kustomization.yaml").read_text())["namespace"]
    assert namespace != NAMESPACE
    assert {_key(o) for o in base} == set(objects) - {("Namespace", namespace)} | {("Namespace", NAMESPACE)}
    assert NAMESPACE not in json.dumps(
        [o for k, o in objects.items() if k[0] != "CustomResourceDefinition"]), f"{NAMESPACE!r} left somewhere"
    cfg = _config(objects)
    assert cfg["kubernetes"]["leader_election"]["namespace"] == namespace
    assert cfg["kubernetes"]["canary_resources"]["namespaces"] == [namespace]
    url = _one(objects, "AlertmanagerConfig")["spec"]["receivers"][0]["webhookConfigs"][0]["url"]
    assert url == f"http://canaryd.{namespace}.svc:8080/webhooks/alertmanager"
    # the overlay's config is the base's with the namespace changed, nothing else
    base_text = {_key(o): o for o in base}[("ConfigMap", "canaryd-config")]["data"]["config.yaml"]
    assert objects[("ConfigMap", "canaryd-config")]["data"]["config.yaml"] == base_text.replace(NAMESPACE, namespace)
    assert not _container(objects)["image"].startswith("ghcr.io/canaryd/"), "the overlay shows setting a registry"


def test_no_operator_overlay_uses_annotations_and_a_rules_configmap() -> None:
    objects = _render_overlay("no-operator")
    kinds = {k for k, _ in objects}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
    want = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    assert _one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"] == want
    assert _one(objects, "Service")["metadata"]["annotations"] == want
    rules = objects[("ConfigMap", "canaryd-prometheus-rules")]
    assert rules["metadata"]["namespace"] == NAMESPACE
    assert rules["data"] == sync_rules.rule_files()
    assert rules["data"] == {p.name: p.read_text() for p in sorted((ROOT / "rules").glob("*.yml"))}
    assert sync_rules.CONFIGMAP_TARGET.read_text() == sync_rules.render_configmap(), (
        "overlays/no-operator/rules-configmap.yaml is out of date: run python deploy/sync_rules.py"
    )
    groups = [g for text in rules["data"].values() for g in yaml.safe_load(text)["groups"]]
    assert groups == sync_rules.rule_groups(), "the ConfigMap and the PrometheusRule carry the same rules"
    assert sync_rules.main(["--check"]) == 0
