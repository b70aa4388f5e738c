# SPDX-License-Identifier: Apache-2.0
"""Schemathesis hooks for the agent's API (SCHEMATHESIS_HOOKS=hooks, with this directory on
PYTHONPATH): the constraints of /v1/openapi.json that JSON Schema cannot state, as the
document's descriptions say them, applied to the schema-valid (positive) cases only, so that
a case generated as valid is valid:

- PUT /policy: every `except` CIDR lies inside its `cidr`; an `endPort` has a port (not 0)
  and is not below it;
- PUT /service/{id}: a backend (ip, port, protocol) is listed once.

Negative cases are left as generated: the fixes touch nothing JSON Schema judges.
"""

import ipaddress

import schemathesis


def _positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _net(text):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _port(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _fix_policy(node):
    if isinstance(node, list):
        for item in node:
            _fix_policy(item)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("cidr"), str) and isinstance(node.get("except"), list):
        outer = _net(node["cidr"])
        kept = []
        for item in node["except"]:
            inner = _net(item) if isinstance(item, str) else None
            if (
                outer is not None
                and inner is not None
                and inner.version == outer.version
                and inner.subnet_of(outer)
            ):
                kept.append(item)
        node["except"] = kept
    if "endPort" in node and node["endPort"] is not None:
        port = _port(node.get("port"))
        end = _port(node["endPort"])
        if not port:
            del node["endPort"]
        elif end is not None and end < port:
            node["endPort"] = port
    for value in node.values():
        _fix_policy(value)


def _fix_service(body):
    if not isinstance(body, dict) or not isinstance(body.get("backend-addresses"), list):
        return
    frontend = body.get("frontend-address") or {}
    default = frontend.get("protocol") if isinstance(frontend, dict) else None
    seen = set()
    kept = []
    for backend in body["backend-addresses"]:
        if isinstance(backend, dict):
            protocol = backend.get("protocol") or default or "TCP"
            key = (backend.get("ip"), backend.get("port", 0), str(protocol).upper())
            if key in seen:
                continue
            seen.add(key)
        kept.append(backend)
    body["backend-addresses"] = kept


@schemathesis.hook
def map_case(context, case):
    if not _positive(case):
        return case
    label = f"{case.operation.method.upper()} {case.operation.path}"
    if label == "PUT /policy":
        _fix_policy(case.body)
    elif label == "PUT /service/{id}":
        _fix_service(case.body)
    return case
