"""Checks of the Kubernetes values a spec passes through to its children: names, quantities,
integers, env vars and NetworkPolicy peers. Pure.

The API server would refuse most of these too, but only once a child is written, under the
child's field names, and for some (a duplicate env name, an unknown key, a number where a string
belongs) with a 500 that looks like a server fault. Checked here, each is refused before anything
is applied, under the spec's own field name.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from . import api

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(api.QUANTITY)
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")
INT32_MAX = api.INT32_MAX
STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
QUALIFIED_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

ENV_KEYS = {"name", "value", "valueFrom"}
ENV_SOURCES = {
    "configMapKeyRef": {"name", "key", "optional"},
    "secretKeyRef": {"name", "key", "optional"},
    "fieldRef": {"apiVersion", "fieldPath"},
    "resourceFieldRef": {"containerName", "resource", "divisor"},
}
PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}
SELECTOR_KEYS = {"matchLabels", "matchExpressions"}
EXPRESSION_KEYS = {"key", "operator", "values"}
IPBLOCK_KEYS = {"cidr", "except"}

Found = list[tuple[str, str]]  # (field, message)


def check_name(name: str) -> Found:
    """The resource's name is every child's name, and a Service name must be a DNS-1035 label."""
    if len(name) <= 63 and DNS_1035.match(name):
        return []
    return [
        (
            "metadata.name",
            f"{name!r} cannot name the Service in front of the model: use at most 63 lowercase "
            "letters, digits and '-', starting with a letter and ending with a letter or digit "
            "(a DNS-1035 label), and recreate the resource under that name",
        )
    ]


def quantity(field: str, value: Any, *, positive: bool = False) -> tuple[Decimal | None, Found]:
    if not isinstance(value, str) or not QUANTITY.match(value):
        return None, [(field, f"{value!r} is not a quantity: write e.g. '500m', '2', '4Gi'")]
    amount = Decimal(parse_quantity(value))
    if amount < 0 or (positive and amount == 0):
        return None, [(field, f"{value!r} must be {'greater than' if positive else 'at least'} 0")]
    return amount, []


def check_resources(field: str, requests: dict[str, Any], limits: dict[str, Any]) -> Found:
    found: Found = []
    amounts: dict[str, dict[str, Decimal]] = {"requests": {}, "limits": {}}
    for part, values in (("requests", requests), ("limits", limits)):
        for key, value in values.items():
            if key == "nvidia.com/gpu":
                continue  # refused with its own message
            where = f"{field}.{part}.{key}"
            if not (key in STANDARD_RESOURCES or key.startswith("hugepages-") or QUALIFIED_RESOURCE.match(key)):
                found.append(
                    (
                        where,
                        f"{key!r} is not a resource name: use cpu, memory, ephemeral-storage or a "
                        "qualified name like example.com/device; GPUs are set with spec.resources.gpu",
                    )
                )
                continue
            amount, problems = quantity(where, value)
            found += problems
            if amount is not None:
                amounts[part][key] = amount
    for key, request in amounts["requests"].items():
        limit = amounts["limits"].get(key)
        if limit is not None and request > limit:
            found.append(
                (
                    f"{field}.requests.{key}",
                    f"{requests[key]!r} is more than the limit {limits[key]!r}: a request may not "
                    "exceed its limit; lower the request or raise the limit",
                )
            )
    return found


def int_or_percent(field: str, value: int | str | None) -> Found:
    if value is None:
        return []
    if isinstance(value, int):
        if 0 <= value <= INT32_MAX:
            return []
        return [(field, f"{value} must be between 0 and {INT32_MAX}")]
    if PERCENT.match(value):
        return []
    return [(field, f"{value!r} is neither a number nor a percentage like '25%'")]


def check_env(field: str, env: list[Any], reserved: set[str]) -> Found:
    found: Found = []
    seen: dict[str, int] = {}
    for i, var in enumerate(env):
        where = f"{field}[{i}]"
        if not isinstance(var, dict):
            found.append((where, "must be an object with name and value (or valueFrom)"))
            continue
        found += _unknown_keys(where, var, ENV_KEYS)
        name = var.get("name")
        if not isinstance(name, str) or not ENV_NAME.match(name):
            found.append(
                (f"{where}.name", f"{name!r} is not an environment variable name (letters, digits, '_', '-', '.')")
            )
        elif name in reserved:
            found.append(
                (
                    f"{where}.name",
                    f"{name} is set by the operator from the spec and cannot be overridden: remove it "
                    "(see the spec fields of spec.runtime)",
                )
            )
        elif name in seen:
            found.append((f"{where}.name", f"{name} is already set by {field}[{seen[name]}]: set each name once"))
        else:
            seen[name] = i
        if "value" in var and not isinstance(var["value"], str):
            found.append((f"{where}.value", f"{var['value']!r} must be a string: quote it ('{var['value']}')"))
        if "valueFrom" in var:
            found += _env_source(f"{where}.valueFrom", var["valueFrom"])
            if "value" in var:
                found.append((where, "set value or valueFrom, not both"))
    return found


def _env_source(field: str, source: Any) -> Found:
    if not isinstance(source, dict) or len(source) != 1 or next(iter(source)) not in ENV_SOURCES:
        return [(field, f"must hold exactly one of {', '.join(ENV_SOURCES)}")]
    ((kind, ref),) = source.items()
    if not isinstance(ref, dict):
        return [(f"{field}.{kind}", "must be an object")]
    return _unknown_keys(f"{field}.{kind}", ref, ENV_SOURCES[kind])


def check_peers(field: str, peers: list[Any]) -> Found:
    found: Found = []
    for i, peer in enumerate(peers):
        where = f"{field}[{i}]"
        if not isinstance(peer, dict) or not peer:
            found.append((where, "is empty: give podSelector, namespaceSelector or ipBlock"))
            continue
        found += _unknown_keys(where, peer, PEER_KEYS)
        if "ipBlock" in peer and len(set(peer) & PEER_KEYS) > 1:
            found.append((where, "ipBlock cannot be combined with podSelector or namespaceSelector: make two entries"))
        for key in ("podSelector", "namespaceSelector"):
            if key in peer:
                found += _selector(f"{where}.{key}", peer[key])
        if "ipBlock" in peer:
            found += _ip_block(f"{where}.ipBlock", peer["ipBlock"])
    return found


def _selector(field: str, selector: Any) -> Found:
    if not isinstance(selector, dict):
        return [(field, "must be a label selector (matchLabels, matchExpressions)")]
    found = _unknown_keys(field, selector, SELECTOR_KEYS)
    labels = selector.get("matchLabels", {})
    if not isinstance(labels, dict):
        found.append((f"{field}.matchLabels", "must map label keys to values"))
    else:
        found += [
            (f"{field}.matchLabels.{k}", f"{v!r} must be a string") for k, v in labels.items() if not isinstance(v, str)
        ]
    expressions = selector.get("matchExpressions", [])
    for j, expression in enumerate(expressions if isinstance(expressions, list) else [None]):
        if not isinstance(expression, dict):
            found.append((f"{field}.matchExpressions[{j}]", "must be an object with key, operator, values"))
            continue
        found += _unknown_keys(f"{field}.matchExpressions[{j}]", expression, EXPRESSION_KEYS)
    return found


def _ip_block(field: str, block: Any) -> Found:
    if not isinstance(block, dict):
        return [(field, "must be an object with cidr (and except)")]
    found = _unknown_keys(field, block, IPBLOCK_KEYS)
    network = _cidr(f"{field}.cidr", block.get("cidr"), found)
    excepts = block.get("except") or []
    for j, item in enumerate(excepts if isinstance(excepts, list) else [excepts]):
        inner = _cidr(f"{field}.except[{j}]", item, found)
        if (
            network is not None
            and inner is not None
            and not (
                inner.version == network.version and inner.subnet_of(network)  # type: ignore[arg-type]
            )
        ):
            found.append((f"{field}.except[{j}]", f"{item!r} must lie inside cidr {block['cidr']!r}"))
    return found


def _cidr(field: str, value: Any, found: Found) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        if not isinstance(value, str) or "/" not in value:
            raise ValueError
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        found.append((field, f"{value!r} is not a CIDR like '10.0.0.0/8'"))
        return None


def _unknown_keys(field: str, obj: dict[str, Any], known: set[str]) -> Found:
    return [
        (f"{field}.{key}", f"is not a field here (a typo?): use {', '.join(sorted(known))}")
        for key in sorted(set(obj) - known)
    ]
