"""Execution providers: config names to onnxruntime's, options, and the fallback-or-fail policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import onnxruntime as ort

from edgert.errors import UsageError

log = logging.getLogger("edgert.infer")

# Config names → onnxruntime provider names.
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider", "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider", "qnn": "QNNExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
    "acl": "ACLExecutionProvider", "armnn": "ArmNNExecutionProvider",
    "dml": "DmlExecutionProvider", "cpu": "CPUExecutionProvider",
}


class ProviderUnavailable(UsageError):
    """runtime.provider_policy = "fail" and a preferred provider did not bind."""


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    requested: tuple[str, ...]                 # onnxruntime names, in preference order
    options: tuple[dict[str, str], ...]
    missing: tuple[str, ...]                   # config names this onnxruntime build lacks


def plan(providers: tuple[str, ...], options: Mapping[str, Mapping[str, str]],
         policy: str, where: str) -> ProviderPlan:
    """What to ask onnxruntime for; refuses up front under `fail` when a provider is absent."""
    available = set(ort.get_available_providers())
    names, opts, missing = [], [], []
    for p in providers:
        name = PROVIDER_NAMES[p]
        if name in available:
            names.append(name)
            opts.append(dict(options.get(p, {})))
        else:
            missing.append(p)
    if missing and policy == "fail":
        raise ProviderUnavailable(
            f"{where}: runtime.providers asks for {', '.join(missing)}, which this onnxruntime "
            f"does not have (it has {', '.join(sorted(available))}); install the onnxruntime "
            "build for this board, or set runtime.provider_policy = \"fallback\"")
    if "CPUExecutionProvider" not in names:
        # The CPU provider is always there and takes any node another provider cannot.
        names.append("CPUExecutionProvider")
        opts.append({})
    return ProviderPlan(tuple(names), tuple(opts), tuple(missing))


def check_bound(p: ProviderPlan, bound: tuple[str, ...], policy: str, where: str) -> tuple[str, ...]:
    """Providers that were available but did not bind (e.g. CUDA without its libraries)."""
    unbound = tuple(n for n in p.requested if n not in bound)
    if unbound and policy == "fail":
        raise ProviderUnavailable(
            f"{where}: {', '.join(unbound)} failed to start (onnxruntime fell back to "
            f"{', '.join(bound)}); check the provider's libraries and runtime.provider_options, "
            "or set runtime.provider_policy = \"fallback\"")
    return unbound
